"""The beam search's loop in C (porting/kernels/skinny_search.c, ``native.Search``) against its reference,
porting/generation/beam.py's ``_search``, on the same kernels: bitwise the same hypotheses, scores and
per-position scores, on every shipped model and recorded setting it runs for (the first batches of each:
the C loop's bookkeeping meets every rule there, finished sentences leaving, limits, forced tokens). Where
it does not run (n-gram blocking, transformers' stopping rule, an ensemble, torch's kernels) the Python
loop does, and the same recordings hold it to fairseq (tests/test_port_reference_runs.py).
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from parity import shipped
from porting.generation import beam
from porting.generation.beam import generate, left_pad
from porting.generation.ensemble import Ensemble
from porting.generation.options import GenerationOptions
from porting.kernels import library, native
from porting.model.load import load_ensemble
from tests.test_port_reference_runs import MANIFEST, load, start

pytestmark = pytest.mark.skipif(not native.available(), reason=f"few-row kernels unavailable: {native.unavailable_reason()}")

SINGLE = [run for run, spec in MANIFEST["runs"].items() if not run.endswith("ensemble")]
BATCHES = 2                        # per setting: 100 lines of ende-*, m2m-*, mbart; ~36 of bart-man


@pytest.fixture(scope="module")
def fast(converted):
    torch.set_num_threads(MANIFEST["threads"])
    return {run: Ensemble(load_ensemble(converted[run])[1], kernels="fast") for run in SINGLE}


def both(ensemble, batch, opts, begin, monkeypatch):
    """(the hypotheses with the C loop where it runs, with beam.py's loop, whether the C loop ran)."""
    ran = []
    call = native.Search.__call__
    monkeypatch.setattr(native.Search, "__call__", lambda self, *a, **k: ran.append(1) or call(self, *a, **k))
    ours = generate(ensemble, left_pad(batch), opts, None, begin)
    monkeypatch.setattr(beam, "_search_natively", lambda *a: False)
    theirs = generate(ensemble, left_pad(batch), opts, None, begin)
    monkeypatch.undo()
    return ours, theirs, bool(ran)


@pytest.mark.parametrize("run,setting", [(r, s) for r in SINGLE for s in MANIFEST["runs"][r]["settings"]])
def test_c_loop_equals_the_python_loop(converted, fast, monkeypatch, run, setting):
    rec = load(run, f"generation/{setting}.json")
    ids = load(run, "inputs.json")["ids"]
    opts = GenerationOptions(**rec["options"], ngram_blocking="fairseq", max_len_from="batch-width")
    for batch in rec["batches"][:BATCHES]:
        ours, theirs, ran = both(fast[run], [ids[i] for i in batch], opts, start(converted, run), monkeypatch)
        assert ran == (opts.no_repeat_ngram_size == 0)           # n-gram blocking: beam.py's loop alone
        assert ours == theirs                                    # dataclasses: tokens, scores, positional scores


def test_c_loop_under_other_rules_and_lengths(converted, fast, monkeypatch):
    """Settings the recordings lack: sentences of very different limits in one batch (max_len from each
    sentence's own length), a min_len near them, greedy in a batch, a large unkpen (<unk> never chosen)."""
    run = "ende-sep"
    ids = load(run, "inputs.json")["ids"][:24]
    for options in (dict(beam=5, max_len_a=0.3, max_len_b=1, min_len=1), dict(beam=1, max_len_b=40),
                    dict(beam=3, lenpen=0.0, unkpen=1e4), dict(beam=8, min_len=12, max_len_b=30)):
        ours, theirs, ran = both(fast[run], ids, GenerationOptions(**options), start(converted, run), monkeypatch)
        assert ran and ours == theirs, options


def test_falls_back_where_it_does_not_run(converted, fast, monkeypatch):
    """transformers' stopping rule, torch's kernels and an ensemble run beam.py's loop; a step the kernels
    hand back (a NaN logit here) runs the whole batch again there: the same hypotheses either way."""
    run = "ende-sep"
    ids = load(run, "inputs.json")["ids"][:6]
    begin = start(converted, run)
    _, _, ran = both(fast[run], ids, GenerationOptions(beam=5, early_stopping="true"), begin, monkeypatch)
    assert not ran
    portable = Ensemble(load_ensemble(converted[run])[1], kernels="portable")
    assert portable.decoders[0].native_search is None
    two = Ensemble(load_ensemble(converted["ende-sep-ensemble"])[1], kernels="fast")
    assert two.search([], 5, [10], 1, 0.0, begin) is None
    handed_back = []
    monkeypatch.setattr(native.Search, "__call__", lambda self, *a, **k: handed_back.append(1))    # returns None
    got = generate(fast[run], left_pad(ids), GenerationOptions(beam=5), None, begin)
    monkeypatch.undo()
    monkeypatch.setattr(beam, "_search_natively", lambda *a: False)
    assert handed_back and got == generate(fast[run], left_pad(ids), GenerationOptions(beam=5), None, begin)


def test_a_nan_logit_is_handed_back(converted):
    """The kernel's hand-back reaches Python as None (beam.py then runs its own loop), not as hypotheses."""
    ensemble = Ensemble(load_ensemble(converted["ende-sep"])[1], kernels="fast")
    decoder = ensemble.decoders[0]
    enc = ensemble.encode(left_pad([[10, 11, 12, 2]]))[0]
    with torch.no_grad():
        decoder.model.decoder.output_projection.weight[7, 0] = math.nan
    decoder.repack()
    assert decoder.search(enc, 5, [10], 1, 0.0, 2, 2, ()) is None


def test_refuses_what_it_cannot_run(converted, fast):
    decoder = fast["ende-sep"].decoders[0]
    search = decoder.native_search
    enc = fast["ende-sep"].encode(left_pad([[10, 11, 12, 2]]))[0]
    assert decoder.search(enc, 5, [search.embedding.rows], 1, 0.0, 2, 2, ()) is None    # beyond the position table
    keys = decoder.layers_c.encoder_keys(*zip(*[decoder._encoder_keys_values(layer.encoder_attn, enc)
                                                for layer in decoder.model.decoder.layers]), None)
    with pytest.raises(ValueError, match="limits"):
        search(keys, 5, [10, 10], 1, 0.0, 2, 2)                                   # two limits, one sentence
    with pytest.raises(ValueError, match="do not fit"):
        native.Search(search.layers, search.embedding, native.pack(torch.zeros(7, search.layers.c), None), None, None, 1, 3)


def test_abi_mirror_of_the_decoder_struct_is_checked(monkeypatch):
    """skinny_search.c's struct decoder against native.py's _Decoder: a drifted mirror is named."""
    import ctypes

    lib = native._load()[0]
    assert library.abi_mismatch(lib) is None

    class Dropped(ctypes.Structure):
        _fields_ = [f for f in library._Decoder._fields_ if f[0] != "unk"]
    monkeypatch.setattr(library, "_Decoder", Dropped)
    assert "struct decoder has 19 fields, the Python mirror 18" in library.abi_mismatch(lib)


def test_the_recordings_list_these_runs():
    """The runs this file walks are the manifest's (a renamed run would silently drop out)."""
    runs = json.loads((shipped.RUNS / "manifest.json").read_text())["runs"]
    assert set(SINGLE) == {r for r in runs if "ensemble" not in r} and len(SINGLE) >= 7
