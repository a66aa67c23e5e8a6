"""The recorded reference runs are complete and self-consistent, and fairseq reproduces them exactly."""
from __future__ import annotations

import functools
import hashlib
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from parity import shipped
from parity.record import CHUNK_SIZE, RUNS, THREADS
from parity.settings import SETTINGS
from tests.conftest import requires_fairseq

RUN_DIR = shipped.RUNS
MANIFEST = json.loads((RUN_DIR / "manifest.json").read_text())
BOS, EOS, UNK = 0, 2, 3  # fairseq Dictionary's fixed specials, checked against the dict files below


def load(run: str, name: str):
    return json.loads((RUN_DIR / run / name).read_text(encoding="utf-8"))


def generation_files():
    return [(r, s) for r, spec in MANIFEST["runs"].items() for s in spec["settings"]]


def lines(run: str) -> int:
    return MANIFEST["runs"][run]["test_set"]["lines"]


def multilingual(run: str) -> bool:
    return shipped.catalog()[MANIFEST["runs"][run]["model"]].multilingual


def bart(run: str) -> bool:
    """The BART family's run: GPT-2's files in its release directory (parity.fairseq_hub.ORIGINALS)."""
    return (shipped.catalog()[MANIFEST["runs"][run]["model"]].path / "encoder.json").is_file()


def mbart(run: str) -> bool:
    """The mBART family's run: its task's language codes as the file suffixes (parity.fairseq_hub.ORIGINALS)."""
    return "_" in MANIFEST["runs"][run]["source_lang"]


def decoder(run: str) -> tuple[int, list[int], int]:
    """(start, forced, end) as the run recorded them (inputs.json's "decoder"; a run recorded before the end
    token was kept ended on </s>)."""
    d = load(run, "inputs.json")["decoder"]
    return d["start"], d["forced"], d.get("end", EOS)


def mbart_token(run: str, lang: str) -> int:
    """The shipped mBART model's [xx_YY] token: the task appends its --langs (mbart.cc25's 25 codes) after
    the dictionary's entries and the four specials."""
    from transformers.models.mbart.tokenization_mbart import FAIRSEQ_LANGUAGE_CODES

    model = shipped.catalog()[MANIFEST["runs"][run]["model"]]
    entries = len((model.path / f"dict.{lang}.txt").read_text(encoding="utf-8").splitlines())
    return 4 + entries + list(FAIRSEQ_LANGUAGE_CODES).index(lang)


@functools.cache
def spm_normalizer(run: str):
    import sentencepiece

    model = shipped.catalog()[MANIFEST["runs"][run]["model"]]
    return sentencepiece.SentencePieceProcessor(model_file=str(model.path / "spm.8k.model"))


def language_token(run: str, lang: str) -> int:
    """The shipped multilingual model's token for `lang`: its line in the model dictionary (M2M-100's
    style, __xx__), after the four specials fairseq puts first."""
    model = shipped.catalog()[MANIFEST["runs"][run]["model"]]
    symbols = [line.split()[0] for line in (model.path / "model_dict.8k.txt").read_text(encoding="utf-8").splitlines()]
    return symbols.index(f"__{lang}__") + 4


def test_manifest_covers_every_run_and_file():
    assert set(MANIFEST["runs"]) == {r.name for r in RUNS}
    on_disk = {str(p.relative_to(RUN_DIR)) for p in RUN_DIR.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(MANIFEST["files"]) == on_disk
    for rel, digest in MANIFEST["files"].items():
        assert hashlib.sha256((RUN_DIR / rel).read_bytes()).hexdigest() == digest, rel
    assert MANIFEST["settings"] == SETTINGS
    assert MANIFEST["versions"]["fairseq-fixed"] and MANIFEST["versions"]["torch"]


def test_manifest_matches_shipped_models_and_data():
    cat = shipped.catalog()
    for run, spec in MANIFEST["runs"].items():
        model_dir = cat[spec["model"]].path
        for name, digest in spec["model_files"].items():
            assert hashlib.sha256((model_dir / name).read_bytes()).hexdigest() == digest, (run, name)
        for name, digest in spec["test_set"]["sha256"].items():
            assert hashlib.sha256((shipped.DATA / name).read_bytes()).hexdigest() == digest


def test_specials_are_fairseqs_fixed_ids():
    # Dictionary ids are not line numbers: <s>=0 <pad>=1 </s>=2 <unk>=3 come before the file's entries.
    for m in shipped.catalog().values():
        name = "model_dict.8k.txt" if m.multilingual else f"dict.{m.target_lang}.txt"
        first = (m.path / name).read_text(encoding="utf-8").split("\n", 1)[0]
        assert first.split()[0] not in {"<s>", "<pad>", "</s>", "<unk>"}


@pytest.mark.parametrize("run", list(MANIFEST["runs"]))
def test_inputs_are_consistent(run):
    inputs = load(run, "inputs.json")
    n = lines(run)
    assert all(len(inputs[k]) == n for k in ("source", "reference", "moses", "bpe", "ids"))
    for line, moses, bpe, ids in zip(inputs["source"], inputs["moses"], inputs["bpe"], inputs["ids"]):
        if multilingual(run):
            # no pre-tokenizer; SentencePiece's pieces spell the line as its normaliser writes it
            # (NFKC: "10.º" is "10.o"; spaces as ▁, one first); the source's language token first
            # (--encoder-langtok src), </s> last
            assert moses == line.split()
            assert "".join(bpe) == spm_normalizer(run).normalize(line)
            assert ids[0] == language_token(run, MANIFEST["runs"][run]["source_lang"])
            ids = ids[1:]
        elif bart(run):
            # GPT-2's BPE is the whole pipeline (no pre-tokenizer): its ids as decimal symbols, <s> first,
            # cut as the hub cuts (max_positions 256 - 2: room for <s> and </s>)
            assert moses == line.split() and all(p.isdigit() for p in bpe)
            assert ids[0] == BOS
            ids, bpe = ids[1:], bpe[:254]
        elif mbart(run):
            # SentencePiece, no pre-tokenizer; the task appends the source language's token after </s>
            assert moses == line.split() and ids[-1] == mbart_token(run, MANIFEST["runs"][run]["source_lang"])
            ids = ids[:-1]
        else:
            assert " ".join(bpe).replace("@@ ", "").split() == moses  # BPE only splits Moses tokens
        assert len(ids) == len(bpe) + 1 and ids[-1] == EOS        # the source gets </s> appended
        assert EOS not in ids[:-1]


@pytest.mark.parametrize("run,setting", generation_files())
def test_generation_is_complete_and_consistent(run, setting):
    rec = load(run, f"generation/{setting}.json")
    options = rec["options"]
    assert options == SETTINGS[setting]
    n_src = load(run, "inputs.json")["ids"]
    assert len(rec["hypotheses"]) == lines(run)
    forced = ([language_token(run, MANIFEST["runs"][run]["target_lang"])] if multilingual(run)
              else [BOS] if bart(run) else [])
    # the generator's eos: </s>, or mBART's target language token (</s> then an ordinary token)
    end = mbart_token(run, MANIFEST["runs"][run]["target_lang"]) if mbart(run) else EOS
    assert decoder(run) == ((end if mbart(run) else EOS), forced, end)
    beam, lenpen = options.get("beam", 5), options.get("lenpen", 1.0)
    for src_ids, hyps in zip(n_src, rec["hypotheses"]):
        # fairseq's generator returns every finalised hypothesis; nbest only limits what
        # fairseq-generate prints
        assert len(hyps) == beam
        scores = [h["score"] for h in hyps]
        assert scores == sorted(scores, reverse=True)
        for h in hyps:
            toks, pos = h["tokens"], h["positional_scores"]
            assert len(pos) == len(toks) and toks[-1] == end and end not in toks[:-1]
            # a log-prob, but for <unk> under a negative unkpen (a bonus, added to its score)
            assert all(p <= 0 for p, t in zip(pos, toks) if t != UNK or options.get("unkpen", 0) >= 0)
            # the target's language token (BART: <s>) is forced first, part of the hypothesis and its score
            assert toks[:len(forced)] == forced
            # fairseq's score is the cumulative log-prob (incl. </s>) over length ** lenpen; the
            # cumulative sum is float32 in fairseq, hence the relative tolerance.
            assert h["score"] == pytest.approx(sum(pos) / len(toks) ** lenpen, rel=1e-5, abs=1e-5)
            if "min_len" in options:
                assert len(toks) > options["min_len"]  # </s> is masked while step < min_len
            if "max_len_b" in options:
                # fairseq sizes max_len from the *batch's* padded source length, so the bound per
                # sentence is the longest source in the test set (an upper bound of every batch's)
                longest = max(len(s) for s in n_src)
                assert len(toks) <= options.get("max_len_a", 0) * longest + options["max_len_b"] + 1


def test_settings_change_outputs():
    """Each recorded setting must exercise its code path: it has to change some hypotheses."""
    for run, spec in MANIFEST["runs"].items():
        base = [h[0]["tokens"] for h in load(run, "generation/beam5_nbest5.json")["hypotheses"]]
        for setting in spec["settings"]:
            if setting in ("beam5_nbest5", "no_repeat_ngram"):
                continue
            top = [h[0]["tokens"] for h in load(run, f"generation/{setting}.json")["hypotheses"]]
            changed = sum(a != b for a, b in zip(base, top))
            assert changed > 0, f"{run}/{setting} changes nothing against beam 5"
    for run in ("ende-sep", "m2m-en-fr"):
        unk = load(run, "generation/unkpen.json")["hypotheses"]
        assert any(UNK in h[0]["tokens"] for h in unk), run


@pytest.mark.parametrize("run", [r for r, s in MANIFEST["runs"].items() if s["teacher_forced"]])
def test_teacher_forced_tensors(run):
    meta = load(run, "teacher_forced.json")
    tensors = load_file(str(RUN_DIR / run / "teacher_forced.safetensors"))
    inputs = load(run, "inputs.json")
    greedy = load(run, "generation/greedy.json")["hypotheses"]
    order = meta["forward_order"]
    assert order[:3] == ["src_tokens", "target", "prev_output_tokens"]
    assert order[-2:] == ["decoder.logits", "decoder.lprobs"]
    assert "encoder.embed" in order and "decoder.embed" in order
    for i in meta["sentences"]:
        t = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith(f"s{i}/")}
        assert list(t) and set(t) == set(order)
        assert t["src_tokens"].tolist() == inputs["ids"][i]
        S, T = len(t["src_tokens"]), len(t["target"])
        start, _, end = decoder(run)
        assert t["prev_output_tokens"][0] == start and t["target"][-1] == end
        forced = ([language_token(run, MANIFEST["runs"][run]["target_lang"])] if multilingual(run)
              else [BOS] if bart(run) else [])
        assert t["target"][:len(forced)].tolist() == forced
        assert torch.equal(t["prev_output_tokens"][1:], t["target"][:-1])
        C = t["encoder.embed"].shape[1]
        for name in order[3:-2]:
            assert t[name].shape == ((S if name.startswith("encoder") else T), C), name
        lprobs = t["decoder.lprobs"]
        assert lprobs.shape == t["decoder.logits"].shape and lprobs.shape[0] == T
        assert torch.allclose(torch.logsumexp(lprobs.double(), -1), torch.zeros(T, dtype=torch.float64), atol=1e-5)
        # The first decoding step sees only </s>, so greedy's first token is the argmax of the
        # teacher-forced step 0 (</s> excluded: min_len=1 masks it), or the forced language token,
        # with the same log-prob.
        step0 = lprobs[0].clone()
        step0[end] = -math.inf
        first = greedy[i][0]["tokens"][0]
        assert first == (forced[0] if forced else int(step0.argmax()))
        assert greedy[i][0]["positional_scores"][0] == pytest.approx(float(lprobs[0, first]), abs=1e-5)


# ---------------------------------------------------------------- live fairseq reproduces the record

@pytest.fixture(scope="module")
def hubs():
    from parity.record import open_run

    torch.set_num_threads(THREADS)
    return {r.name: open_run(r)[0] for r in RUNS}


@requires_fairseq
@pytest.mark.parametrize("run", list(MANIFEST["runs"]))
def test_fairseq_reproduces_inputs(hubs, run):
    from parity.fairseq_hub import encode, model_input

    hub, inputs = hubs[run], load(run, "inputs.json")
    for i, line in enumerate(inputs["source"]):
        moses = hub.tokenize(line)
        bpe = hub.apply_bpe(moses)
        # the family's encode (mBART's: fairseq-generate's binarizer; BARTHubInterface's puts <s> first)
        assert (moses.split(), bpe.split(), model_input(hub, encode(hub, line)).tolist()) == \
            (inputs["moses"][i], inputs["bpe"][i], inputs["ids"][i]), line


# Off the recording's machine class (tests/conftest.py, replays_bitwise): the harness's tolerances.
SCORE_TOL, TENSOR_ATOL, TENSOR_RTOL = 1e-4, 1e-5, 1e-4


@requires_fairseq
@pytest.mark.parametrize("run,setting", generation_files())
def test_fairseq_reproduces_generation_exactly(hubs, replays_bitwise, run, setting):
    """The first chunk again, batched exactly as recorded: tokens, strings and every float identical
    where the machine rounds as the recording's did; elsewhere every best hypothesis identical (tokens,
    pieces, text) and its scores within 1e-4 (the lower places of a beam can hold another hypothesis of
    an equal score: porting/NOTES.md)."""
    from parity.record import generate_chunk

    rec = load(run, f"generation/{setting}.json")["hypotheses"][:CHUNK_SIZE]
    source = load(run, "inputs.json")["source"][:CHUNK_SIZE]
    ours = generate_chunk(hubs[run], source, load(run, f"generation/{setting}.json")["options"])
    if replays_bitwise(run):
        assert ours == rec
        return
    for i, (a, b) in enumerate(zip(ours, rec, strict=True)):
        assert [a[0][k] for k in ("tokens", "bpe", "text")] == [b[0][k] for k in ("tokens", "bpe", "text")], i
        assert abs(a[0]["score"] - b[0]["score"]) < SCORE_TOL, i
        assert max(abs(x - y) for x, y in zip(a[0]["positional_scores"], b[0]["positional_scores"])) < SCORE_TOL, i


@requires_fairseq
@pytest.mark.parametrize("run", [r for r, s in MANIFEST["runs"].items() if s["teacher_forced"]])
def test_fairseq_reproduces_teacher_forced_exactly(hubs, replays_bitwise, run):
    from parity.record import teacher_forced

    inputs = load(run, "inputs.json")
    recorded = load_file(str(RUN_DIR / run / "teacher_forced.safetensors"))
    target_lang = MANIFEST["runs"][run]["target_lang"]
    for i in (0, 1):
        tensors, order = teacher_forced(hubs[run], inputs["source"][i], inputs["reference"][i], target_lang)
        assert order == load(run, "teacher_forced.json")["forward_order"]
        for name, value in tensors.items():
            if replays_bitwise(run) or value.dtype not in (torch.float32, torch.float16, torch.bfloat16):
                assert torch.equal(value, recorded[f"s{i}/{name}"]), name
            else:
                assert torch.allclose(value, recorded[f"s{i}/{name}"], rtol=TENSOR_RTOL, atol=TENSOR_ATOL), name


def test_fairseqs_ngram_blocker_is_inert_on_cpu():
    """A known fairseq bug, recorded as a fact: since fairseq commit 8ca4813 the CPU n-gram blocker
    compares the last n-1 entries of the whole (padded) token buffer, i.e. padding, and never bans
    anything (fairseq issues #4709, #5206). fairseq-fixed has it, so its no_repeat_ngram output is
    plain beam search. The port blocks correctly by default (porting/NOTES.md)."""
    for run, spec in MANIFEST["runs"].items():
        if "no_repeat_ngram" not in spec["settings"]:
            continue
        base = [h[0] for h in load(run, "generation/beam5_nbest5.json")["hypotheses"]]
        blocked = [h[0] for h in load(run, "generation/no_repeat_ngram.json")["hypotheses"]]
        assert blocked == base


@pytest.mark.parametrize("run,setting", generation_files())
def test_batches_cover_every_line_once(run, setting):
    rec = load(run, f"generation/{setting}.json")
    flat = sorted(i for b in rec["batches"] for i in b)
    assert flat == list(range(lines(run)))
    for b in rec["batches"]:
        assert len({i // CHUNK_SIZE for i in b}) == 1  # a batch never crosses a chunk
