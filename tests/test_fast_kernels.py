"""The fast kernels' pieces against the plain computation they replace (porting/kernels/fast_decoder.py,
porting/kernels/fast_encoder.py). End to end, the parity suites run every recorded and live setting with
``kernels="fast"``; these tests pin each piece down on its own, including the branches a shipped
model does not reach.

Tolerances: float32 results computed in another order differ by a few ulps of the operands'
magnitude; 1e-5 absolute on values of order 1-10 is ~100x the differences observed (~1e-7..1e-6).
"""
from __future__ import annotations

import subprocess

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from porting.generation.beam import left_pad
from porting.kernels import attention, build, library, native
from porting.kernels.attention import FUSED_ATTENTION_ROWS
from porting.kernels.fast_decoder import ONEDNN_WEIGHTS, appended, linear, pack, top_candidates
from porting.kernels.fast_encoder import FastEncoder
from porting.model.activation import Activation
from porting.model.load import load_ensemble

TOL = 1e-5


def reference_attention(q, k, v, mask):
    w = torch.matmul(q.double(), k.double().transpose(-1, -2))
    if mask is not None:
        w = w + mask.double()
    return torch.matmul(torch.softmax(w, -1), v.double()).float()


@pytest.mark.parametrize("few_rows", ["skinny", "sdpa"])
@pytest.mark.parametrize("n,heads,queries", [(2, 4, 1), (40, 4, 1), (8, 4, 5)])
def test_attention_every_kernel_matches_plain_softmax(n, heads, queries, few_rows):
    """Few rows: porting/kernels/skinny.c's kernel, or torch's fused one where that cannot be built
    (or is not asked for: --kernels portable); more rows: three torch calls."""
    if few_rows == "skinny" and not native.available():
        pytest.skip(f"few-row kernel unavailable: {native.unavailable_reason()}")
    attend = attention.select(use_native=few_rows == "skinny")
    assert attend.few_rows is (attention.native if few_rows == "skinny" else attention.fused)
    torch.manual_seed(0)
    q, k, v = torch.randn(n, heads, queries, 16), torch.randn(n, heads, 9, 16), torch.randn(n, heads, 9, 16)
    pad = torch.zeros(n, 9, dtype=torch.bool)
    pad[0, :3] = True                                       # left padding in the first sentence
    mask = torch.zeros(n, 9).masked_fill(pad, float("-inf"))[:, None, None, :]
    fused = n * heads * queries <= FUSED_ATTENTION_ROWS
    for m in (None, mask):
        out = attend(q, k, v, m)
        assert (out - reference_attention(q, k, v, m)).abs().max() < TOL, f"few rows={fused}"
    # a masked key has no weight at all: changing it changes nothing
    k2 = k.clone()
    k2[0, :, :3] = 1e4
    assert torch.equal(attend(q, k2, v, mask)[0], attend(q, k, v, mask)[0])


def brute_force_cost(pad, heads, queries):
    """The least cost of ``attention.groups``'s model over every cut of the sentences into runs (2^(B-1))."""
    real = ~pad
    b = pad.size(0)
    best = None
    for cuts in range(1 << (b - 1)):
        bounds = [0] + [i + 1 for i in range(b - 1) if cuts >> i & 1] + [b]
        cost = 0
        for i, j in zip(bounds, bounds[1:]):
            cols = real[i:j].any(0).nonzero().flatten()
            width = int(cols[-1] - cols[0] + 1)
            cost += attention.GROUP_COST + (j - i) * heads * (width if queries is None else queries) * width
        best = cost if best is None else min(best, cost)
    return best


def run_cost(runs, heads, queries):
    return sum(attention.GROUP_COST + (g.end - g.first) * heads * ((g.hi - g.lo) if queries is None else queries)
               * (g.hi - g.lo) for g in runs)


@pytest.mark.parametrize("queries", [None, 5])
def test_attention_groups_cost_least_and_cover_every_real_token(queries):
    """``attention.groups``'s runs against every possible cut of a small batch: the least cost, every sentence in
    one run, every real token inside its run's columns, the mask kept exactly where a run has padding."""
    torch.manual_seed(0)
    for trial in range(40):
        b, s = int(torch.randint(1, 7, ())), int(torch.randint(2, 40, ()))
        lengths = torch.randint(1, s + 1, (b,))
        if trial % 2:                                           # left padding (the search's), else right
            pad = torch.arange(s)[None, :] < (s - lengths)[:, None]
        else:
            pad = torch.arange(s)[None, :] >= lengths[:, None]
        runs = attention.groups(pad, 4, queries)
        assert [g.first for g in runs] == [0] + [g.end for g in runs[:-1]] and runs[-1].end == b
        for g in runs:
            real = ~pad[g.first:g.end]
            assert not real[:, :g.lo].any() and not real[:, g.hi:].any()
            assert g.masked == (not bool(real[:, g.lo:g.hi].all()))
        assert run_cost(runs, 4, queries) == brute_force_cost(pad, 4, queries)
    assert attention.groups(None, 4) == [attention.WHOLE]


def test_groups_kept_as_sentences_leave(monkeypatch):
    """When sentences leave the batch, each run keeps its remaining sentences together (no new cut), over their
    own columns again, the mask kept exactly where padding is left among them. Runs cut with and without the
    fixed cost per group (without: runs of one sentence, or of several as wide)."""
    torch.manual_seed(2)
    for trial in range(80):
        monkeypatch.setattr(attention, "GROUP_COST", 0 if trial % 2 else 10_000)
        b, s = int(torch.randint(2, 12, ())), int(torch.randint(2, 30, ()))
        pad = torch.arange(s)[None, :] < (s - torch.randint(1, s + 1, (b,)))[:, None]          # left padding
        runs = attention.groups(pad, 4, 5)
        survivors = sorted(torch.randperm(b)[:int(torch.randint(1, b + 1, ()))].tolist())
        left = attention.kept(runs, survivors, pad[survivors])
        assert [g.first for g in left] == [0] + [g.end for g in left[:-1]] and left[-1].end == len(survivors)
        for g in left:
            old = [survivors[i] for i in range(g.first, g.end)]
            assert len({next(r for r in runs if r.first <= o < r.end) for o in old}) == 1    # from one run
            real = ~pad[old]
            assert real[:, g.lo].any() and real[:, g.hi - 1].any()                          # the columns, tight
            assert not real[:, :g.lo].any() and not real[:, g.hi:].any()
            assert g.masked == (not bool(real[:, g.lo:g.hi].all()))
    assert attention.kept([attention.WHOLE], [0, 2], None) == [attention.WHOLE]


@pytest.mark.parametrize("trim_queries", [True, False])
def test_grouped_attention_equals_attention_over_the_whole_batch(trim_queries, monkeypatch):
    """Each group over its own columns gives every real query what attention over the padded batch gives it,
    with the runs as groups chooses them and with every sentence a run of its own (no fixed cost)."""
    torch.manual_seed(1)
    lengths = [3, 9, 4, 17, 16, 2]
    b, s, heads = len(lengths), max(lengths), 4
    pad = torch.arange(s)[None, :] < (s - torch.tensor(lengths))[:, None]          # left padding
    mask = torch.zeros(b, s).masked_fill(pad, float("-inf"))[:, None, None, :]
    k, v = torch.randn(b, heads, s, 16), torch.randn(b, heads, s, 16)
    q = torch.randn(b, heads, s if trim_queries else 5, 16)
    attend = attention.select(use_native=False)
    whole = attend(q, k, v, mask)
    for cost in (attention.GROUP_COST, 0):
        monkeypatch.setattr(attention, "GROUP_COST", cost)
        runs = attention.groups(pad, heads, None if trim_queries else 5)
        assert cost or len(runs) == b                           # without a fixed cost every sentence alone
        for g, part in zip(runs, attention.grouped(attend, q, k, v, mask, runs, trim_queries)):
            expected = whole[g.first:g.end, :, g.lo:g.hi] if trim_queries else whole[g.first:g.end]
            assert part.shape == expected.shape
            real_queries = (~pad[g.first:g.end, g.lo:g.hi])[:, None, :, None] if trim_queries else True
            assert ((part - expected).abs() * real_queries).max() < TOL


def test_attention_in_bfloat16_for_few_rows():
    """The few-row C kernel is float32 only; bfloat16 (``--dtype bfloat16``) goes through torch."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 1, 16) for _ in range(3))
    out = attention.select(use_native=True)(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16 and (out.float() - reference_attention(q, k, v, None)).abs().max() < 0.05


def test_appended_cache_is_the_reordered_cache_then_the_step():
    """torch's fast path follows the search's order as it appends a step's keys and values (one copy): equal to
    the reorder and the concatenation it replaces, with rows repeated and dropped (sentences leaving)."""
    torch.manual_seed(0)
    cache, step = torch.randn(2, 6, 4, 3, 8), torch.randn(6, 2, 4, 1, 8).transpose(0, 1)      # a view, as the step's
    for order in (None, torch.tensor([5, 5, 0, 2, 1, 3]), torch.tensor([4, 1, 1])):
        rows = step[:, :6 if order is None else order.numel()]
        expected = torch.cat([cache if order is None else cache.index_select(1, order), rows], 3)
        assert torch.equal(appended(cache, rows, order), expected)


def test_top_candidates_equal_topk_without_ties():
    torch.manual_seed(0)
    for vocab in (6992, 31232):
        scores = torch.randn(3, 5 * vocab)
        values, where = top_candidates(scores, 10)
        expected = torch.topk(scores, 10)
        assert torch.equal(values, expected.values) and torch.equal(where, expected.indices)


def test_top_candidates_with_ties_and_masked_scores():
    """Ties may be broken differently from torch.topk, but the values are the same, every position
    holds its value, and no position is chosen twice; -inf (masked) scores are never preferred."""
    torch.manual_seed(0)
    vocab = 6992
    scores = torch.randint(-50, 0, (4, 5 * vocab)).float()   # many exact ties
    scores[:, ::7] = float("-inf")
    values, where = top_candidates(scores, 10)
    assert torch.equal(values, torch.topk(scores, 10).values)
    assert torch.equal(torch.gather(scores, 1, where), values)
    assert all(len(set(row)) == 10 for row in where.tolist())


def test_top_candidates_falls_back_where_chunks_do_not_pay():
    scores = torch.randn(2, 7919)                            # a prime width: no group size
    values, where = top_candidates(scores, 10)
    assert torch.equal(where, torch.topk(scores, 10).indices)


@pytest.mark.parametrize("packing", ["panels", "onednn", "none"])
@pytest.mark.parametrize("rows", [1, 5, 16, 17, 160])
def test_linear_matches_f_linear_on_every_path(rows, packing):
    """porting/kernels/skinny.c's panels; without them oneDNN's packed weights (few rows) or F.linear; with
    nothing packed, F.linear or the W x^T product (few rows, large weights)."""
    if packing == "panels" and not native.available():
        pytest.skip(f"few-row kernel unavailable: {native.unavailable_reason()}")
    torch.manual_seed(0)
    layer = nn.Linear(256, 2048).requires_grad_(False)       # 512K weights: oneDNN's without panels
    packed = {} if packing == "none" else {layer: pack(layer, use_native=packing == "panels")}
    if packing == "onednn" and packed[layer] is None:
        pytest.skip("this torch has no oneDNN")
    x = torch.randn(rows, 256)
    expected = F.linear(x, layer.weight, layer.bias)
    assert (linear(x, layer, packed) - expected).abs().max() < TOL * expected.abs().max()


def test_what_is_packed():
    """Every float32 nn.Linear gets panels where porting/kernels/skinny.c builds; otherwise (or with
    --kernels portable) only large ones get oneDNN's packing, where torch has oneDNN; other dtypes
    nothing."""
    small, large = nn.Linear(128, 512), nn.Linear(512, 1024)
    assert small.weight.numel() < ONEDNN_WEIGHTS <= large.weight.numel()
    if native.available():
        assert type(pack(small)) is native.Panels and type(pack(large)) is native.Panels
    assert pack(nn.Linear(512, 1024).to(torch.bfloat16)) is None
    assert pack(small, use_native=False) is None
    onednn = pack(large, use_native=False)
    if torch.backends.mkldnn.is_available():
        assert type(onednn) is torch.Tensor
    else:
        assert onednn is None


def test_skinny_kernel_is_built_where_it_can_be():
    """On an x86-64 CPU with AVX2 and a C compiler (this project's machines and CI) the few-row kernel
    must build: a silent fallback would hide a 1.2x slowdown."""
    import platform
    import shutil
    if (platform.machine().lower() not in ("x86_64", "amd64") or torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512")
            or not (shutil.which("cc") or shutil.which("gcc"))):
        pytest.skip("needs x86-64 with AVX2 and a C compiler")
    assert native.available(), native.unavailable_reason()


@pytest.mark.skipif(not native.available(), reason=f"few-row kernel unavailable: {native.unavailable_reason()}")
@pytest.mark.parametrize("bias", [True, False])
def test_skinny_linear_within_float32_rounding(bias):
    """Every row-block size (1-6 rows, then blocks of 6), full and partial 16-column panels, several
    depths, on one thread and split between threads (from 2^20 multiply-adds), against float64.
    Tolerance: the classic bound for a k-term float32 dot product, k * 2^-24 * (|x| |W|^T + |b|) per
    entry (each of the k fused multiply-adds rounds once). Split or not, each entry is the same sum:
    bitwise equal."""
    torch.manual_seed(0)
    shapes = [(rows, n_in, n_out) for rows in (1, 2, 3, 4, 5, 6, 7, 12, 13, 16)
              for n_in, n_out in ((1, 16), (33, 17), (128, 384), (512, 128), (64, 7), (16, 1))]
    shapes += [(5, 1024, 1000), (160, 128, 6992), (17, 300, 333)]            # threaded
    for rows, n_in, n_out in shapes:
        layer = nn.Linear(n_in, n_out, bias=bias).requires_grad_(False)
        x = torch.randn(rows, n_in) * 3
        panels = native.pack(layer.weight, layer.bias)
        got = native.linear(x, panels)
        w64 = layer.weight.double()
        exact = x.double() @ w64.t() + (layer.bias.double() if bias else 0)
        bound = n_in * 2.0 ** -24 * (x.double().abs() @ w64.abs().t() + (layer.bias.double().abs() if bias else 0))
        assert got.shape == (rows, n_out)
        assert ((got.double() - exact).abs() <= bound).all(), (rows, n_in, n_out)
        if rows * n_in * n_out >= 1 << 20:
            threads = torch.get_num_threads()
            try:
                torch.set_num_threads(1)
                assert torch.equal(native.linear(x, panels), got)
            finally:
                torch.set_num_threads(threads)


@pytest.mark.skipif(not native.available(), reason=f"few-row kernel unavailable: {native.unavailable_reason()}")
def test_skinny_linear_refuses_what_it_cannot_read():
    w = torch.randn(8, 4)
    p = native.pack(w, None)
    with pytest.raises(ValueError, match="float32 4 -> 8"):
        native.linear(torch.randn(2, 5), p)                  # wrong depth: would read past the panels
    with pytest.raises(ValueError):
        native.linear(torch.randn(2, 4, dtype=torch.float64), p)
    x = torch.randn(4, 3).t()                                # [3, 4], not contiguous: copied, not misread
    assert (native.linear(x, p) - x @ w.t()).abs().max() < TOL


@pytest.mark.skipif(not native.available(), reason=f"few-row kernel unavailable: {native.unavailable_reason()}")
def test_skinny_attention_shapes_and_refusals():
    """Head sizes that are and are not multiples of 8 (the vector dot product's tail), one key,
    several query rows per group (the encoder attention's beam rows), a mask per sentence."""
    torch.manual_seed(0)
    for n, heads, rows, keys, dim in ((1, 1, 1, 1, 8), (3, 2, 5, 7, 13), (2, 4, 1, 30, 32), (1, 16, 5, 25, 64)):
        q, k, v = torch.randn(n, heads, rows, dim), torch.randn(n, heads, keys, dim), torch.randn(n, heads, keys, dim)
        mask = torch.zeros(n, 1, 1, keys).masked_fill(torch.rand(n, 1, 1, keys) < 0.4, float("-inf"))
        mask[..., -1] = 0                                    # every sentence has a real token
        for m in (None, mask):
            assert (native.attention(q, k, v, m) - reference_attention(q, k, v, m)).abs().max() < TOL
    # transposed (not contiguous) queries are read correctly
    q = torch.randn(1, 5, 4, 32).transpose(1, 2)
    assert (native.attention(q, k[:, :4, :, :32], v[:, :4, :, :32], None)
            - reference_attention(q, k[:, :4, :, :32], v[:, :4, :, :32], None)).abs().max() < TOL
    with pytest.raises(ValueError, match="want float32"):
        native.attention(torch.randn(2, 4, 1, 8), torch.randn(2, 4, 3, 8), torch.randn(2, 4, 4, 8), None)
    with pytest.raises(ValueError, match="want float32"):
        native.attention(torch.randn(2, 4, 1, 8), torch.randn(2, 4, 3, 8), torch.randn(2, 4, 3, 8), torch.zeros(2, 1, 1, 4))


def test_skinny_falls_back_with_a_reason(monkeypatch, tmp_path):
    """Disabled, or no working compiler: unavailable, with the reason; fast.pack then packs nothing
    small and linear() uses F.linear. Nothing half-written is left in the cache."""
    monkeypatch.setenv("PORTING_CACHE", str(tmp_path))
    try:
        monkeypatch.setenv("PORTING_NATIVE", "0")
        native._load.cache_clear()
        assert not native.available() and "PORTING_NATIVE=0" in native.unavailable_reason()
        layer = nn.Linear(128, 512).requires_grad_(False)
        assert pack(layer) is None
        x = torch.randn(5, 128)
        assert torch.equal(linear(x, layer, {}), F.linear(x, layer.weight, layer.bias))
        if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
            monkeypatch.setenv("PORTING_NATIVE", "1")
            monkeypatch.setenv("CC", "false")                # a "compiler" that always fails
            native._load.cache_clear()
            with pytest.warns(RuntimeWarning, match="could not compile"):
                assert not native.available()
            assert "could not compile" in native.unavailable_reason()
            assert list((tmp_path / "native").iterdir()) == []
    finally:
        monkeypatch.undo()
        native._load.cache_clear()


@pytest.mark.skipif(not native.available(), reason=f"few-row kernels unavailable: {native.unavailable_reason()}")
@pytest.mark.parametrize("pre_norm,sentences", [(False, 3), (True, 3), (False, 5)])
def test_whole_layer_kernel_matches_the_python_step(converted, pre_norm, sentences):
    """porting/kernels/skinny.c's decoder layers against the step they replace, over several steps (growing
    self-attention cache, the search's reordering folded into the cache copy, a sentence leaving)
    on padded sources, for both norm placements and both activations; 15 rows (attention on one
    thread) and 25 (attention rows split between threads)."""
    from porting.generation.ensemble import Ensemble
    from porting.kernels.fast_decoder import FastDecoder

    _, (model,) = load_ensemble(converted["ende-sep"])
    for layer in model.decoder.layers:
        layer.pre = pre_norm
        layer.activation = Activation.GELU if pre_norm else Activation.RELU
        layer.act = layer.activation.fn
    sources = [[5, 6, 7, 2], [8, 9, 10, 11, 12, 13, 2], [14, 2], [15, 16, 2], [17, 18, 19, 20, 2]][:sentences]
    enc = Ensemble([model]).encode(left_pad(sources))[0]
    fast_c, fast_py = FastDecoder(model), FastDecoder(model)
    assert fast_c.layers_c is not None
    fast_py.layers_c = None
    caches = [fast_c.new_caches(), fast_py.new_caches()]
    torch.manual_seed(0)
    prev = torch.full((sentences * 5, 1), 2)                  # beam 5
    with torch.no_grad():
        for step in range(6):
            a, b = fast_c.step(prev, enc, caches[0]), fast_py.step(prev, enc, caches[1])
            assert (a - b).abs().max() < TOL * a.abs().max()
            for ca, cb in zip(caches[0].kv, caches[1]):                 # stacked for the C layers
                assert (ca - cb.kv).abs().max() < TOL * cb.kv.abs().max()
            n = prev.size(0)
            # rows follow rows of their own sentence; at step 3 the middle sentence leaves
            order = (torch.arange(n) // 5 * 5 + torch.randint(0, 5, (n,))).view(-1, 5)
            if step == 3:
                order = order[[0, 2]]
            order = order.reshape(-1)
            for decoder, cache in zip((fast_c, fast_py), caches):
                decoder.reorder(cache, order)
            assert all(c.pending_order is order for c in caches)     # both follow it as the next step copies
            prev = torch.cat([prev[order], torch.randint(4, 100, (order.numel(), 1))], 1)


@pytest.mark.skipif(not native.available(), reason=f"few-row kernels unavailable: {native.unavailable_reason()}")
def test_whole_layer_kernel_refuses_what_does_not_fit(converted):
    from porting.kernels.fast_decoder import FastDecoder

    _, (model,) = load_ensemble(converted["ende-sep"])
    layers = FastDecoder(model).layers_c
    enc_k = [torch.zeros(1, 4, 3, 32)] * 3
    keys = layers.encoder_keys(enc_k, enc_k, None)
    with pytest.raises(ValueError, match="do not fit"):
        layers.encoder_keys(enc_k, enc_k, torch.zeros(1, 1, 1, 4))                   # mask of another length
    with pytest.raises(ValueError, match="do not fit"):
        layers.encoder_keys(enc_k[:2], enc_k[:2], None)                              # one layer short
    with pytest.raises(ValueError, match="do not fit"):
        layers.encoder_keys([torch.zeros(1, 4, 3, 16)] * 3, enc_k, None)             # keys of another head width
    with pytest.raises(ValueError, match="do not fit"):
        layers(torch.zeros(5, 64), None, None, keys)                                    # wrong width
    with pytest.raises(ValueError, match="do not fit"):
        layers(torch.zeros(5, 128), torch.zeros(3, 2, 4, 4, 1, 32), None, keys)          # other rows, no order
    with pytest.raises(ValueError, match="do not fit"):
        layers(torch.zeros(5, 128), torch.zeros(2, 2, 5, 4, 1, 32), None, keys)          # one layer's cache short
    with pytest.raises(ValueError, match="outside 0..3"):
        layers(torch.zeros(5, 128), torch.zeros(3, 2, 4, 4, 1, 32), torch.tensor([0, 1, 2, 3, 4]), keys)


@pytest.mark.parametrize("kernels,pre_norm", [("c", False), ("c", True), ("torch", False), ("torch", True),
                                              ("torch-groups", False)])
def test_fast_encoder_matches_encoder_on_real_tokens(converted, kernels, pre_norm, monkeypatch):
    """Padding removed: the real tokens' outputs equal the full encoder's; padding rows are zero. On
    the compiled layers (skinny_encoder_layers: 59 real rows, attention split between threads; one
    sentence of 18 alone) and on torch's, both norm placements and activations; on torch's with every
    sentence's attention a group of its own (attention.groups without a fixed cost)."""
    if kernels == "c" and not native.available():
        pytest.skip(f"few-row kernels unavailable: {native.unavailable_reason()}")
    if kernels == "torch-groups":
        monkeypatch.setattr(attention, "GROUP_COST", 0)
        kernels = "torch"
    _, (model,) = load_ensemble(converted["ende-sep"])
    for layer in model.encoder.layers:
        layer.pre = pre_norm
        layer.activation = Activation.GELU if pre_norm else Activation.RELU
        layer.act = layer.activation.fn
    fast = FastEncoder(model, use_native=kernels == "c")
    assert (fast.layers_c is not None) == (kernels == "c") and (fast.qkv is None) == (kernels == "c")
    torch.manual_seed(0)
    rows = [torch.randint(4, 5000, (n,)).tolist() + [2] for n in (3, 17, 9, 30)]
    src = left_pad(rows)
    with torch.no_grad():
        exact, ours = model.encoder(src), fast(src)
    real = ~exact.pad_mask.t()                                  # [S, B]
    assert attention.GROUP_COST or len(attention.groups(exact.pad_mask, fast.heads)) == len(rows)
    assert torch.equal(ours.pad_mask, exact.pad_mask)
    assert (ours.out[real] - exact.out[real]).abs().max() < TOL
    assert torch.count_nonzero(ours.out[~real]) == 0
    kept_rows, keep = ours.kept
    assert keep.numel() == sum(map(len, rows))
    assert torch.equal(ours.out.transpose(0, 1).reshape(-1, ours.out.size(-1))[keep], kept_rows)
    # no padding at all: nothing to remove, same result
    with torch.no_grad():
        one = fast(left_pad(rows[1:2]))
    assert one.kept is None and one.pad_mask is None
    assert (one.out - model.encoder(left_pad(rows[1:2])).out).abs().max() < TOL


@pytest.mark.skipif(not native.available(), reason=f"few-row kernels unavailable: {native.unavailable_reason()}")
def test_compiled_encoder_layers_refuse_what_does_not_fit(converted):
    _, (model,) = load_ensemble(converted["ende-sep"])
    layers = FastEncoder(model).layers_c
    keep = torch.tensor([0, 1, 3])                               # 3 real tokens of 2 sentences x 2 positions
    with pytest.raises(ValueError, match="do not fit"):
        layers(torch.zeros(3, 64), keep, 2, 2, None)                                # wrong width
    with pytest.raises(ValueError, match="do not fit"):
        layers(torch.zeros(3, 128), None, 2, 2, None)                               # no keep, rows != 2 x 2
    with pytest.raises(ValueError, match="do not fit"):
        layers(torch.zeros(3, 128), keep, 2, 2, torch.zeros(2, 1, 1, 3))           # mask of another length
    with pytest.raises(ValueError, match="outside 0..3"):
        layers(torch.zeros(3, 128), torch.tensor([0, 1, 4]), 2, 2, None)
    with pytest.raises(ValueError, match="without encoder attention"):
        native.DecoderLayers(layers.layers)


@pytest.mark.skipif(not native.available(), reason=f"few-row kernels unavailable: {native.unavailable_reason()}")
def test_compiled_encoder_only_where_its_copy_is_small_and_float32(converted, monkeypatch):
    """An int8 encoder runs its modules (the panels would ignore them); an encoder whose panels would
    exceed MAX_PANEL_WEIGHTS with the rest of the encoder's side keeps torch's layers (memory)."""
    from porting.kernels import fast_decoder
    from porting.kernels.fast_decoder import FastDecoder
    from porting.kernels.quantize import quantize_model

    _, (model,) = load_ensemble(converted["ende-sep"])
    # the encoder's products hold 589,824 weights, the decoder's encoder keys' projections 98,304
    monkeypatch.setattr(fast_decoder, "MAX_PANEL_WEIGHTS", 688_127)
    assert FastEncoder(model).layers_c is None
    assert model.decoder.layers[0].encoder_attn.k_proj not in FastDecoder(model).packed
    monkeypatch.setattr(fast_decoder, "MAX_PANEL_WEIGHTS", 688_128)
    assert type(FastDecoder(model).packed[model.decoder.layers[0].encoder_attn.k_proj]) is native.Panels
    assert FastEncoder(model).layers_c is not None
    quantize_model(model, "int8-all")
    encoder = FastEncoder(model)
    assert encoder.layers_c is None and len(encoder.qkv) == len(model.encoder.layers)
    src = left_pad([[5, 6, 7, 2], [8, 2]])
    with torch.no_grad():
        ours, theirs = encoder(src), model.encoder(src)
    real = ~theirs.pad_mask.t()                                    # [S, B]
    assert (ours.out[real] - theirs.out[real]).abs().max() < TOL   # the int8 modules, as the model runs them


def test_int8_encoder_self_attention_where_it_gains(converted, monkeypatch):
    """Where the encoder's self-attention projections gain from int8 (wide ones; here the thresholds are lowered
    so that the shipped model's do), the model's projections and the fast encoder's fused one are int8 alike,
    the fused one the three's rows and scales: the fast encoder computes what the model's encoder computes."""
    from porting.kernels import quantize

    _, (model,) = load_ensemble(converted["ende-sep"])
    monkeypatch.setattr(quantize, "MIN_INPUTS", 128)
    monkeypatch.setattr(quantize, "MIN_WEIGHTS", 128 * 128)
    assert "encoder self-attention: int8" in quantize.quantize_model(model, "int8")
    encoder = FastEncoder(model)
    a = model.encoder.layers[0].self_attn
    assert type(a.k_proj) is not torch.nn.Linear and encoder.layers_c is None
    fused = encoder.qkv[0].weight()
    stacked = [getattr(a, name).weight() for name in ("q_proj", "k_proj", "v_proj")]
    assert torch.equal(fused.int_repr(), torch.cat([w.int_repr() for w in stacked]))
    assert torch.equal(fused.q_per_channel_scales(), torch.cat([w.q_per_channel_scales() for w in stacked]))
    # one sentence: in a padded batch the model's forward quantizes activations over the padding rows too
    # (one scale per tensor), the fast encoder over the real tokens alone (porting/NOTES.md)
    src = left_pad([[5, 6, 7, 9, 2]])
    with torch.no_grad():
        ours, theirs = encoder(src), model.encoder(src)
    assert (ours.out - theirs.out).abs().max() < TOL


def test_an_int8_product_runs_each_engine_where_it_is_faster(monkeypatch):
    """porting/kernels/int8.py: fbgemm's packing under MANY_ROWS rows, oneDNN's from there on (where it has
    VNNI: the suite holds it to AVX2, so the engine is named here); the two compute the same quantization
    (within float32 rounding of each other), and a new weight reaches both."""
    from porting.kernels import int8

    if "onednn" not in torch.backends.quantized.supported_engines:
        pytest.skip("this torch has no oneDNN int8 engine")
    monkeypatch.setattr(int8, "MANY_ROWS_ENGINE", "onednn")
    layer = torch.nn.Linear(256, 384)
    module = int8.linear(layer)
    few, many = torch.randn(5, 256), torch.randn(int8.MANY_ROWS, 256)
    assert torch.equal(module(few), module.few(few)) and torch.equal(module(many), module.many(many))
    assert not torch.equal(module.few(many), module.many(many))              # two kernels, so the test above tells
    assert (module.few(many) - module.many(many)).abs().max() < 1e-5
    assert (module(many) - layer(many)).abs().max() < 0.1                   # int8's own error (weights ~0.06)
    w = module.weight()
    doubled = torch._make_per_channel_quantized_tensor(w.int_repr(), w.q_per_channel_scales() * 2,
                                                       w.q_per_channel_zero_points(), 0)
    before = module(many)
    module.set_weight_bias(doubled, module.bias())
    for packing in (module.few, module.many):
        assert torch.allclose(packing(many) - module.bias(), 2 * (before - module.bias()), atol=1e-4)


def test_int8_runs_onednn_only_where_it_has_vnni(monkeypatch):
    """Held to AVX2 (as the suite and the AVX2 table hold it) or without AVX-512 VNNI, fbgemm runs every
    product: oneDNN's int8 there was slower than fbgemm's (porting/kernels/int8.py)."""
    from porting.kernels import build, int8

    if "onednn" not in torch.backends.quantized.supported_engines:
        pytest.skip("this torch has no oneDNN int8 engine")
    vnni = build.cpu_flags() | {"avx512_vnni"}
    monkeypatch.setattr(build, "cpu_flags", lambda: vnni)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert int8._many_rows_engine() == "onednn"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert int8._many_rows_engine() is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_vnni")
    assert int8._many_rows_engine() == "onednn"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert int8._many_rows_engine() is None
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(build, "cpu_flags", lambda: vnni - {"avx512_vnni"})
    assert int8._many_rows_engine() is None


def test_fast_embeddings_equal_the_general_ones(converted):
    """FastDecoder._embed (one position row for all) is Embeddings.forward's arithmetic: bitwise equal,
    inside the position table and beyond it (sinusoidal tables are extended, as fairseq does)."""
    from porting.format import PAD
    from porting.kernels.fast_decoder import FastDecoder
    from porting.model.transformer import Embeddings

    _, (model,) = load_ensemble(converted["ende-sep"])
    dec, fast_dec = model.decoder, FastDecoder(model)
    last = torch.tensor([5, 2, 900, 6000, 17])
    for t in (1, 2, 57, dec.position_table().size(0) - PAD, dec.position_table().size(0) + 3):
        general = Embeddings.forward(dec, last[:, None], torch.full((5, 1), PAD + t))[:, 0]
        assert torch.equal(fast_dec._embed(last, t), general), t


@pytest.mark.skipif(not native.available(), reason=f"few-row kernels unavailable: {native.unavailable_reason()}")
def test_skinny_embed_refuses_tokens_outside_the_table():
    table, positions = torch.randn(10, 8), torch.randn(6, 8)
    embedding = native.Embedding(table, 2.5, positions)
    assert torch.equal(embedding(torch.tensor([0, 9]), 3), 2.5 * table[[0, 9]] + positions[3])
    with pytest.raises(IndexError, match="0..9"):
        embedding(torch.tensor([3, 10]), 0)
    with pytest.raises(ValueError):
        embedding(torch.tensor([3, 4], dtype=torch.int32), 0)
    with pytest.raises(ValueError, match="row 6 of 6"):
        embedding(torch.tensor([3, 4]), 6)
    with pytest.raises(ValueError, match="want float32"):
        native.Embedding(table, 1.0, torch.randn(6, 7))


@pytest.mark.skipif(not native.available(), reason=f"few-row kernels unavailable: {native.unavailable_reason()}")
def test_every_activation_has_its_c_case():
    """porting/model/activation.py's table and skinny.c's `activate` switch: a member the C side
    forgot fails here (the fast path would otherwise drop to torch's layers without a word)."""
    assert [a.fairseq_name for a in Activation if not native.activation_supported(a)] == []
    assert len({a.code for a in Activation}) == len(Activation)
    assert not native._load()[0].skinny_activation_supported(max(a.code for a in Activation) + 1)


@pytest.mark.skipif(not native.available(), reason=f"few-row kernels unavailable: {native.unavailable_reason()}")
def test_abi_mirror_is_checked(monkeypatch):
    """The ctypes mirror of skinny.c's struct layer matches the compiled one; a mirror that has
    drifted (a field dropped) is named instead of corrupting memory."""
    lib = native._load()[0]
    assert library.abi_mismatch(lib) is None
    import ctypes

    class Dropped(ctypes.Structure):                          # a field forgotten
        _fields_ = [f for f in library._Layer._fields_ if f[0] != "heads"]
    monkeypatch.setattr(library, "_Layer", Dropped)
    assert "the Python mirror 24" in library.abi_mismatch(lib)

    class Widened(ctypes.Structure):                          # a field of another type: offsets move
        _fields_ = [(n, ctypes.c_double if n == "activation" else t) for n, t in library._Layer._fields_]
    monkeypatch.setattr(library, "_Layer", Widened)
    assert "bytes" in library.abi_mismatch(lib) or "field" in library.abi_mismatch(lib)


@pytest.mark.skipif(not native.available(), reason=f"few-row kernels unavailable: {native.unavailable_reason()}")
def test_every_entry_point_is_declared_from_the_librarys_own_table():
    """How Python calls C is written once (skinny_abi.h): the library gives its table, types reduced
    to codes by the compiler, and every argtypes/restype is set from it."""
    lib = native._load()[0]
    table = library.signatures(lib)
    assert set(library.CALLED) <= set(table)
    # the codes are the compiler's reading of the declared types: the float and int arguments in place
    assert table["skinny_candidates"] == ("i", "pppiiipiiiiifipppppi")
    assert table["skinny_embed"] == ("i", "pipiifpp") and table["skinny_linear_threads"] == ("v", "ppppiiippi")
    for name, (ret, args) in table.items():
        function = getattr(lib, name)
        assert function.argtypes == [library.CTYPES[c] for c in args] and function.restype == library.CTYPES[ret]


def test_a_library_whose_table_differs_is_refused(monkeypatch):
    """A table without an entry point Python calls, or with a type it cannot pass, is named."""
    class Library:                                            # a stand-in whose table is given
        def __init__(self, text: bytes):
            self.skinny_signatures = lambda: text
            self.skinny_abi = lambda: 0

    assert "skinny_attention, skinny_embed" in library.declare(Library(b"skinny_abi:i:p;"))
    monkeypatch.setattr(library, "CALLED", ("skinny_abi",))
    assert "codes ['d']" in library.declare(Library(b"skinny_abi:i:pd;"))
    assert library.declare(Library(b"skinny_abi:i:p;")) is None


def test_a_definition_that_differs_from_its_declared_line_does_not_compile(tmp_path):
    """skinny_abi.h declares every entry point in every source file: a definition of another type
    is a compile error, not a library that reads its arguments wrongly."""
    try:
        build.check_machine()
        cc = build.compiler()
    except build.Unavailable as e:
        pytest.skip(str(e))
    for f in (*build.SOURCES, *build.HEADERS):
        (tmp_path / f.name).write_text(f.read_text())
    header = tmp_path / "skinny_abi.h"
    declared = "X(skinny_embed, int, const int64_t *, int, const float *, int, int, float,"
    assert declared in header.read_text()
    header.write_text(header.read_text().replace(declared, declared.replace("float,", "double,")))
    done = subprocess.run([cc, *build.FLAGS, *build.ISA_FLAGS["avx2"], str(tmp_path / "skinny.c"), "-o",
                           str(tmp_path / "x.so"), "-lm"], capture_output=True, text=True)
    assert done.returncode != 0 and "conflicting types for 'skinny_embed'" in done.stderr.replace("‘", "'").replace("’", "'")


def test_kernel_cache_must_be_private(monkeypatch, tmp_path):
    """A library in the cache runs as this user: a cache others can write to, or that another user
    owns, turns the kernels off with the reason; a new cache directory is created 0700."""
    import os
    import stat

    monkeypatch.setenv("PORTING_CACHE", str(tmp_path / "fresh"))
    build._private_dir(build.cache_dir())
    assert stat.S_IMODE(build.cache_dir().stat().st_mode) == 0o700
    monkeypatch.setenv("PORTING_CACHE", str(tmp_path / "shared"))
    (tmp_path / "shared" / "native").mkdir(parents=True)
    os.chmod(tmp_path / "shared" / "native", 0o777)
    with pytest.raises(build.Unavailable, match="writable by others"):
        build._private_dir(build.cache_dir())
    if os.getuid() == 0:                                      # only root can give a directory away
        os.chmod(tmp_path / "shared" / "native", 0o700)
        os.chown(tmp_path / "shared" / "native", 65534, 65534)
        with pytest.raises(build.Unavailable, match="belongs to another user"):
            build._private_dir(build.cache_dir())


def test_kernel_library_name_covers_the_compiler_version(monkeypatch, tmp_path):
    """Another compiler version builds another library (the cache never serves a stale build)."""
    try:
        build.check_machine()
        build.compiler()
    except build.Unavailable as e:
        pytest.skip(str(e))
    monkeypatch.setenv("PORTING_CACHE", str(tmp_path))
    names = set()
    for version in ("cc 1.0", "cc 2.0"):
        monkeypatch.setattr(build, "compiler_version", lambda cc, v=version: v)
        names.add(build.library().name)
    assert len(names) == 2


@pytest.mark.skipif(not native.available(), reason=f"few-row kernels unavailable: {native.unavailable_reason()}")
def test_single_threaded_kernels_are_reported(monkeypatch):
    monkeypatch.setattr(library, "_openmp", lambda: (None, None))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    native.warn_if_single_threaded.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="one thread of 2"):
            native.warn_if_single_threaded()
    finally:
        native.warn_if_single_threaded.cache_clear()
