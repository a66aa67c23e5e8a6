"""Bounded memory in a parity run: fairseq's checkpoint read memory-mapped (its optimizer state never
read), the same values either way."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from parity.fairseq_hub import mapped_checkpoints

# The peak is the memory map's high-water mark (VmHWM, per address space): getrusage's ru_maxrss would
# carry the forking test process's own peak across exec.
PROBE = textwrap.dedent("""
    import contextlib, re, sys, torch
    from parity.fairseq_hub import mapped_checkpoints

    def peak_mb():
        return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024
    before = peak_mb()
    context = mapped_checkpoints() if sys.argv[2] == "mapped" else contextlib.nullcontext()
    with context, open(sys.argv[1], "rb") as f:
        state = torch.load(f, map_location="cpu", weights_only=True)   # as fairseq calls it: an open file
        weights = state["model"]["w"].clone()                            # what fairseq copies into its model
    print(peak_mb() - before)
""")


def test_a_checkpoint_is_read_mapped_with_the_same_values(tmp_path):
    state = {"model": {"w": torch.randn(64, 64)}, "last_optimizer_state": {"exp_avg": torch.randn(64, 64)}}
    torch.save(state, tmp_path / "zip.pt")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)   # read as before
    for name in ("zip.pt", "legacy.pt"):
        with mapped_checkpoints(), open(tmp_path / name, "rb") as f:
            loaded = torch.load(f, map_location="cpu", weights_only=True)
        assert torch.equal(loaded["model"]["w"], state["model"]["w"])
        assert torch.equal(loaded["last_optimizer_state"]["exp_avg"], state["last_optimizer_state"]["exp_avg"])
    assert torch.load is not None and torch.load.__name__ == "load"                 # put back


def test_an_unread_optimizer_state_costs_no_memory(tmp_path):
    """A 16 MB model beside 256 MB of optimizer state: read whole, the peak grows by both; mapped, by
    about the model alone (measured in fresh processes; the bound leaves 100 MB for the interpreter)."""
    torch.save({"model": {"w": torch.zeros(4 << 20)}, "last_optimizer_state": {"m": torch.zeros(64 << 20)}},
               tmp_path / "ckpt.pt")

    def growth(how: str) -> int:
        done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "ckpt.pt"), how], capture_output=True,
                              text=True, check=True)
        return int(done.stdout.split()[-1])
    whole, mapped = growth("whole"), growth("mapped")
    assert whole >= 256 and mapped < 100, (whole, mapped)



# Loads the converted model at argv[1] (and with argv[2] "int8" makes the int8-all runtime from it), then
# prints the peak's growth (MB) over all of it.
LOAD_PROBE = textwrap.dedent("""
    import re, sys
    from porting.model.load import load_ensemble
    from porting.translator import runtime_ensemble

    def peak_mb():
        return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024
    before = peak_mb()
    config, models = load_ensemble(sys.argv[1])
    if sys.argv[2] == "int8":
        ensemble = runtime_ensemble(models, "fast", "int8-all")
    print(peak_mb() - before)
""")


@pytest.fixture(scope="module")
def wide_model(converted, tmp_path_factory) -> tuple[str, int]:
    """The shipped model with its feed-forward layers widened to ~200 MB of weights (zeros): its directory and
    its file's size in MB."""
    out = tmp_path_factory.mktemp("wide") / "wide"
    shutil.copytree(converted["ende-sep"], out)
    config = json.loads((out / "config.json").read_text())
    width = 32768
    config["porting"]["architecture"].update(encoder_ffn_embed_dim=width, decoder_ffn_embed_dim=width)
    config.update(encoder_ffn_dim=width, decoder_ffn_dim=width)
    (out / "config.json").write_text(json.dumps(config))
    stored = load_file(out / "model.safetensors")
    for name, tensor in list(stored.items()):
        if ".fc1." in name:
            stored[name] = torch.zeros(width, *tensor.shape[1:]) if name.endswith("weight") else torch.zeros(width)
        elif name.endswith(".fc2.weight"):
            stored[name] = torch.zeros(tensor.size(0), width)
    save_file(stored, out / "model.safetensors")
    return str(out), (out / "model.safetensors").stat().st_size >> 20


def _peak_growth(model_dir: str, what: str) -> int:
    done = subprocess.run([sys.executable, "-c", LOAD_PROBE, model_dir, what], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def test_loading_a_converted_model_holds_its_weights_once(wide_model):
    """The parameters become the file's tensors (tied names one tensor), never a randomly initialised model
    beside a second, loaded copy: loading raises the peak by about the file's size (measured in a fresh
    process; loading into an initialised model raised it by 2.1x)."""
    model_dir, size_mb = wide_model
    growth = _peak_growth(model_dir, "load")
    assert size_mb > 150 and growth < 1.3 * size_mb, (growth, size_mb)


def test_an_int8_runtime_never_holds_float_copies_of_its_products(wide_model):
    """The model is quantized before the fast decoder and encoder are made from it: they pack no float
    copy (panels) of a product int8 replaces, and each product's int8 weights (two packings, for fbgemm and
    oneDNN: porting/kernels/int8.py; a quarter of its float ones each) are made as its float ones are
    dropped. Loading and making the runtime together: the file once, the int8 copies, the allocator's slack:
    measured 1.9x the file's size; 3.0x where the fast decoder packed the float products first and int8
    replaced them after (the loading fixed as it is now)."""
    model_dir, size_mb = wide_model
    growth = _peak_growth(model_dir, "int8")
    assert growth < 2.3 * size_mb, (growth, size_mb)
