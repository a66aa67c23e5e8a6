"""Bounded memory in a parity run: fairseq's checkpoint read memory-mapped (its optimizer state never
read), the same values either way."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import torch

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
