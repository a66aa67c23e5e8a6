"""The compiled kernels' AVX-512 build against their AVX2 build (porting/kernels/build.py builds both
from the same C; skinny_tiles.h's wider tile sums every output in the same order): bit for bit the
same products, and the same n-best lists with the same scores, on every shipped model and recorded
setting, the ensemble included, batched and one sentence at a time.

The rest of the suite runs the AVX2 build (tests/conftest.py holds the whole session to AVX2 to replay
the recordings), so this is where the build that AVX-512 CPUs run by default is held to it."""
from __future__ import annotations

import contextlib
import json
import os

import pytest
import torch

from parity import shipped
from porting.generation.beam import generate, left_pad
from porting.generation.ensemble import Ensemble
from porting.generation.options import GenerationOptions
from porting.kernels import build, native
from porting.model.load import load_ensemble
from porting.tokenizer import decoder_start, open_tokenizer

MANIFEST = json.loads((shipped.RUNS / "manifest.json").read_text())
BATCHED, ALONE = 12, 2      # lines per run and setting: one batch of 12 (60 rows: threads split the
                            # attention rows), then 2 alone (5 rows)

pytestmark = pytest.mark.skipif("avx512f" not in build.cpu_flags() or not native.available(),
                                reason="needs a CPU with AVX-512 and the compiled kernels")


@contextlib.contextmanager
def kernels_built_for(isa: str):
    """The compiled kernels of this process switched to `isa`'s build, and back after."""
    before = os.environ.get(build.ISA_VARIABLE)
    os.environ[build.ISA_VARIABLE] = isa
    native._load.cache_clear()
    try:
        assert native.describe() == f"built {isa}"
        yield
    finally:
        if before is None:
            del os.environ[build.ISA_VARIABLE]
        else:
            os.environ[build.ISA_VARIABLE] = before
        native._load.cache_clear()


def test_products_are_bitwise_equal():
    """Every row count of the tile (1-6 and more), full and partial panels, odd and even panel counts."""
    torch.manual_seed(0)
    shapes = [(1, 128, 384), (5, 128, 384), (7, 64, 40), (6, 33, 17), (13, 1024, 4096), (160, 128, 6992)]
    results = {}
    for isa in ("avx2", "avx512"):
        with kernels_built_for(isa):
            gen = torch.Generator().manual_seed(1)
            results[isa] = []
            for m, k, n in shapes:
                x, w, b = (torch.randn(*s, generator=gen) for s in ((m, k), (n, k), (n,)))
                results[isa].append(native.linear(x, native.pack(w, b)))
    for (m, k, n), a, b in zip(shapes, results["avx2"], results["avx512"]):
        assert torch.equal(a, b), f"{m} x {k} -> {n}: the builds differ by {(a - b).abs().max().item()}"


def nbest(ensemble, ids, settings, start):
    """Every setting's n-best lists of the lines (tokens, score, positional scores), batched and alone."""
    out = {}
    for name in settings:
        opts = GenerationOptions(**MANIFEST["settings"][name])
        batches = [list(range(BATCHED))] + [[i] for i in range(BATCHED, BATCHED + ALONE)]
        out[name] = [[(h.tokens, h.score, h.positional_scores) for h in hyps]
                     for batch in batches for hyps in generate(ensemble, left_pad([ids[i] for i in batch]), opts,
                                                               None, start)]
    return out


@pytest.mark.parametrize("run", list(MANIFEST["runs"]))
def test_every_setting_translates_bit_for_bit_alike(converted, run):
    spec = MANIFEST["runs"][run]
    torch.set_num_threads(MANIFEST["threads"])
    ids = json.loads((shipped.RUNS / run / "inputs.json").read_text())["ids"]
    start = decoder_start(open_tokenizer(converted[run], source_lang=spec["source_lang"],
                                         target_lang=spec["target_lang"]))
    lists = {}
    for isa in ("avx2", "avx512"):
        with kernels_built_for(isa):
            ensemble = Ensemble(load_ensemble(converted[run])[1], kernels="fast")
            assert all(d.layers_c is not None for d in ensemble.decoders)      # the compiled layers ran
            lists[isa] = nbest(ensemble, ids, spec["settings"], start)
    for name in spec["settings"]:
        for line, (a, b) in enumerate(zip(lists["avx2"][name], lists["avx512"][name])):
            assert a == b, f"{run} {name} line {line}: the AVX-512 build's n-best differs from the AVX2 build's"
