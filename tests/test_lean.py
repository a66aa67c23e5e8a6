"""The start-up path (porting/lean.py: numpy and the compiled kernels, no torch) against the fast kernels'
path it repeats: bitwise the same hypotheses, scores and per-position scores on every shipped single model
it runs and every recorded setting (the first batches of each), at torch's thread count and at one thread;
where it does not run (n-gram blocking, transformers' stopping rule, an ensemble, other kernel sets, a model
without a stored position table, a model that fails a check) torch's Translator does, with the same results
and the same errors; and the command line translating a line without importing torch.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from porting import lean
from porting.generation.beam import generate, left_pad
from porting.generation.ensemble import Ensemble
from porting.generation.options import GenerationOptions
from porting.kernels import fast_decoder, library, native
from porting.model import transformer
from porting.model.load import load_ensemble
from porting.translator import Translator
from tests.test_port_reference_runs import MANIFEST, load, start

pytestmark = pytest.mark.skipif(not native.available(), reason=f"few-row kernels unavailable: {native.unavailable_reason()}")

SINGLE = [run for run in MANIFEST["runs"] if not run.endswith("ensemble")]
LEAN = [run for run in SINGLE if not run.startswith("m2m")]        # M2M-100's tables are not stored
BATCHES = 2                        # per setting, as tests/test_native_search.py
MANIFEST_DATA = "reference_runs/data/test.en"


@pytest.fixture(scope="module")
def models(converted):
    """Each run's (lean model, the fast kernels' ensemble), at the recordings' thread count."""
    torch.set_num_threads(MANIFEST["threads"])
    lean.Threads.use(MANIFEST["threads"])
    out = {}
    for run in LEAN:
        config, members = load_ensemble(converted[run])
        arch = lean.Arch.from_config(config["porting"]["architecture"])
        out[run] = lean.LeanModel(arch, lean.read_weights(converted[run], config)), Ensemble(members, kernels="fast")
    return out


def lean_hypotheses(model: lean.LeanModel, batch: list[list[int]], opts: GenerationOptions, begin):
    """porting/lean.py's search for a batch, as LeanTranslator runs it."""
    translator = lean.LeanTranslator.__new__(lean.LeanTranslator)
    translator.model = model
    return translator._search_lean(batch, opts, begin)


@pytest.mark.parametrize("run,setting", [(r, s) for r in LEAN for s in MANIFEST["runs"][r]["settings"]])
def test_lean_path_equals_the_fast_path(converted, models, run, setting):
    rec = load(run, f"generation/{setting}.json")
    ids = load(run, "inputs.json")["ids"]
    opts = GenerationOptions(**rec["options"], ngram_blocking="fairseq", max_len_from="batch-width")
    model, ensemble = models[run]
    for batch in rec["batches"][:BATCHES]:
        rows = [ids[i] for i in batch]
        if opts.no_repeat_ngram_size:
            with pytest.raises(lean.Unsupported, match="n-gram"):
                lean_hypotheses(model, rows, opts, start(converted, run))
            continue
        ours = lean_hypotheses(model, rows, opts, start(converted, run))
        assert ours == generate(ensemble, left_pad(rows), opts, None, start(converted, run))   # every field, bitwise


def test_lean_path_follows_torchs_thread_count(converted, models):
    """The kernels' results depend on their thread count (a reduction split between threads): the lean path
    runs on torch's count; at two threads (the recordings' count is one) it matches torch at two, and on one
    thread against torch's two it does not (which is why it follows torch's count)."""
    model, ensemble = models["ende-sep"]
    ids = load("ende-sep", "inputs.json")["ids"][:24]
    opts = GenerationOptions(beam=5)
    begin = start(converted, "ende-sep")
    try:
        torch.set_num_threads(2)
        theirs = generate(ensemble, left_pad(ids), opts, None, begin)
        lean.Threads.use(2)
        assert lean_hypotheses(model, ids, opts, begin) == theirs
        lean.Threads.use(1)
        assert lean_hypotheses(model, ids, opts, begin) != theirs
    finally:
        torch.set_num_threads(MANIFEST["threads"])
        lean.Threads.use(MANIFEST["threads"])


def test_torch_defaults_are_repeated_without_torch(converted):
    """What lean.py declares again because the original's module imports torch: the same values."""
    assert lean.MAX_PANEL_WEIGHTS == fast_decoder.MAX_PANEL_WEIGHTS
    assert lean.LAYER_NORM_EPS == transformer.LAYER_NORM_EPS
    for run in SINGLE:
        config, (model,) = load_ensemble(converted[run])
        arch, d = model.arch, model.arch.embed_dim
        ours = arch.encoder_layers * (4 * d * d + 2 * d * arch.encoder_ffn_embed_dim) + arch.decoder_layers * 2 * d * d
        assert ours == fast_decoder.encoder_side_weights(model)
    for env in ({}, {"OMP_NUM_THREADS": "1"}):           # a fresh process each: torch reads them at start
        code = ("from porting.kernels import library\nn = library.default_threads()\n"
                "import torch\nassert n == torch.get_num_threads(), (n, torch.get_num_threads())")
        environ = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        subprocess.run([sys.executable, "-c", code], check=True, env={**environ, **env})


def test_where_the_lean_path_does_not_run(converted):
    """Every other runtime and model goes to torch's Translator, which gives its own errors."""
    fallback = pytest.fail
    for runtime in ({"kernels": "portable"}, {"kernels": "exact"}, {"quantize": "int8"}, {"dtype": "bfloat16"}):
        with pytest.raises(lean.Unsupported, match="only the fast kernels on float32"):
            lean.LeanTranslator.open(converted["ende-sep"], fallback, **runtime)
    with pytest.raises(lean.Unsupported, match="an ensemble"):
        lean.LeanTranslator.open(converted["ende-sep-ensemble"], fallback)
    with pytest.raises(lean.Unsupported, match="no stored sinusoidal table"):
        lean.LeanTranslator.open(converted["m2m-enfres"], fallback, source_lang="en", target_lang="fr")


@pytest.fixture
def tampered(converted, tmp_path):
    """A copy of ende-sep whose weights file can be changed."""
    def copy(change):
        out = tmp_path / "model"
        subprocess.run(["cp", "-r", str(converted["ende-sep"]), str(out)], check=True)
        tensors = load_file(str(out / "model.safetensors"))
        change(tensors)
        save_file(tensors, str(out / "model.safetensors"))
        return out
    return copy


@pytest.mark.parametrize("change,problem", [
    (lambda t: t.__setitem__("model.decoder.embed_positions.weight",
                             np.ascontiguousarray(t["model.decoder.embed_positions.weight"][:, ::-1])),
     "differs from fairseq's sinusoidal table"),
    (lambda t: t.__setitem__("model.extra", np.zeros(3, np.float32)), "unexpected tensor model.extra"),
    (lambda t: t.pop("model.encoder.layers.0.fc1.bias"), "missing model.encoder.layers.0.fc1.bias"),
])
def test_a_model_the_loader_refuses_is_refused_alike(tampered, change, problem):
    """The lean path does not run what torch's loader refuses: it hands the model over, whose error is the
    command's (exit 1, one line per problem, no traceback)."""
    model = tampered(change)
    with pytest.raises(lean.Unsupported):
        lean.LeanTranslator.open(model, pytest.fail)
    done = subprocess.run([sys.executable, "-m", "porting_cli", "translate", "--model", str(model)], input="Hello.\n",
                          capture_output=True, text=True)
    assert done.returncode == 1 and problem in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_batch_it_cannot_run_goes_to_torch(converted):
    """Same Translations either way: from the lean path, and from torch's Translator, made once on first need,
    for a batch the lean path cannot run (an option it lacks; a limit beyond its position table)."""
    lines = [line.strip() for line in open(MANIFEST_DATA)][:12]
    reference = Translator.from_pretrained(converted["ende-sep"])
    made = []

    def fallback():
        made.append(1)
        return Translator.from_pretrained(converted["ende-sep"])

    # at torch's thread count in this process (the results depend on it)
    translator = lean.LeanTranslator.open(converted["ende-sep"], fallback, threads=torch.get_num_threads())
    assert translator.generate(lines, batch_size=4, nbest=5) == reference.generate(lines, batch_size=4, nbest=5)
    assert not made and translator.translated == 12
    assert translator.generate(lines, no_repeat_ngram_size=2) == reference.generate(lines, no_repeat_ngram_size=2)
    assert made == [1] and translator.translated == 12
    assert translator.generate(lines, early_stopping="never") == reference.generate(lines, early_stopping="never")
    assert made == [1] and translator.translated == 12          # made once
    translator.model.position_rows = 30                          # as if the table ended at 28 positions
    assert translator.generate(lines, batch_size=4) == reference.generate(lines, batch_size=4)
    assert translator.translated == 12                           # every limit is longer: all on torch's path


def test_the_command_translates_without_torch_and_as_torch_does(converted):
    """`porting translate` on one model: the lean path, torch never imported, the same output as the Translator's."""
    lines = [line.strip() for line in open(MANIFEST_DATA)][:3]
    code = ("import sys\nfrom porting_cli import main\nrc = main(sys.argv[1:])\n"
            "assert 'torch' not in sys.modules, 'torch imported'\nsys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, "translate", "--model", str(converted["ende-sep"]), "--format", "jsonl",
                           "--nbest", "2"], input="\n".join(lines) + "\n", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    expected = Translator.from_pretrained(converted["ende-sep"], threads=library.default_threads()).generate(lines, nbest=2)
    torch.set_num_threads(MANIFEST["threads"])                  # the module's other tests run at the recordings' count
    assert [[(h["tokens"], h["score"], h["positional_scores"], h["text"]) for h in r["hypotheses"]] for r in records] == \
        [[(h.tokens, h.score, h.positional_scores, text) for h, text in zip(t.hypotheses, t.texts)] for t in expected]


def test_the_command_says_which_path_and_porting_lean_0_turns_it_off(converted):
    """-v names the path taken; PORTING_LEAN=0 takes torch's (the same output)."""
    command = [sys.executable, "-m", "porting_cli", "translate", "-v", "--model", str(converted["ende-sep"])]
    lean_run = subprocess.run(command, input="Hello world.\n", capture_output=True, text=True)
    torch_run = subprocess.run(command, input="Hello world.\n", capture_output=True, text=True,
                               env={**os.environ, "PORTING_LEAN": "0"})
    assert lean_run.returncode == torch_run.returncode == 0
    assert "on the lean path" in lean_run.stderr and "on the lean path" not in torch_run.stderr
    assert "kernels fast" in torch_run.stderr and lean_run.stdout == torch_run.stdout
