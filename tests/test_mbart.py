"""The mBART family (issue 33) on the shipped en-ro model (mbart-enro): the converter's conventions, the
native tokenizer against fairseq's task, transformers' MBart and MBartTokenizer(Fast) loading the
conversion, what MBartTokenizer cannot express flagged, the read-back, the end token, and fairseq's
``args`` AttributeError seen and mended."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from parity import shipped
from porting.format import BOS, EOS, UNK, read_config
from porting.tokenizer import decoder_start, open_tokenizer
from tests.conftest import requires_fairseq
from tests.helpers import convert_cli, model_dir, perturbed_ensemble_parity, replay_exact

NAME, SRC, TGT = "mbart-enro", "en_XX", "ro_RO"
LINES, REFERENCES = shipped.test_set(SRC, TGT)
TRICKY = ["", " ", "  leading and trailing  ", "tabs\tand\nnewlines", "café naïve Ünïcödé ăâîșț ĂÂÎȘȚ",
          "emoji 👍🏽", "%PRODUCTNAME %s %1$d", "<unk> </s> [ro_RO] as text"]


def symbols(name: str = NAME) -> list[str]:
    return [line.split()[0] for line in (model_dir(name) / f"dict.{SRC}.txt").read_text(encoding="utf-8").splitlines()]


def cc25() -> list[str]:
    from transformers.models.mbart.tokenization_mbart import FAIRSEQ_LANGUAGE_CODES

    return list(FAIRSEQ_LANGUAGE_CODES)


def test_the_conversion_keeps_fairseqs_conventions(converted):
    config = read_config(converted[NAME])
    p = config["porting"]
    assert p["family"] == "fairseq-mbart" and config["model_type"] == "mbart" and p["transformers_compatible"]
    arch = p["architecture"]
    # mBART's, read from the checkpoint: pre-norm with final norms, layernorm_embedding, scaled embeddings
    assert (arch["encoder_normalize_before"], arch["decoder_final_norm"], arch["layernorm_embedding"],
            arch["no_scale_embedding"], arch["encoder_learned_pos"]) == (True, True, True, False, True)
    vocab = json.loads((converted[NAME] / "vocab.json").read_text())
    entries = symbols()
    # the dictionary's lines at line + 4, then the task's 25 language tokens in --langs order, then <mask>
    assert all(vocab[s] == i + 4 for i, s in enumerate(entries))
    assert [vocab[f"[{lang}]"] for lang in cc25()] == list(range(len(entries) + 4, len(entries) + 29))
    assert vocab["<mask>"] == len(entries) + 29 == config["vocab_size"] - 1 and p["mbart"]["langs"] == cc25()
    generation = json.loads((converted[NAME] / "generation_config.json").read_text())
    tgt = vocab[f"[{TGT}]"]
    # fairseq's generator's eos is the target language's token: it starts the decoder and ends the search
    assert (generation["decoder_start_token_id"], generation["eos_token_id"], generation["forced_eos_token_id"]) == \
        (tgt, tgt, tgt) and "forced_bos_token_id" not in generation
    tok = open_tokenizer(converted[NAME])
    assert tuple(decoder_start(tok)) == (tgt, (), tgt)
    assert tok.encode("Save")[-2:] == [EOS, vocab[f"[{SRC}]"]]


def test_transformers_loads_it_and_agrees(converted):
    """MBartForConditionalGeneration with nothing missing; MBartTokenizer and MBartTokenizerFast give the
    port's ids on every test line (source: ``</s> [en_XX]`` last; target: ``</s> [ro_RO]`` last);
    teacher-forced log-probs within 1e-4 of the port's (float32 reductions in another order)."""
    from transformers import MBartForConditionalGeneration, MBartTokenizer, MBartTokenizerFast

    from porting.model.load import load_ensemble

    d = converted[NAME]
    model, info = MBartForConditionalGeneration.from_pretrained(d, output_loading_info=True)
    assert not any(info.values()), info
    ours = open_tokenizer(d)
    slow = MBartTokenizer.from_pretrained(d, src_lang=SRC, tgt_lang=TGT)
    fast = MBartTokenizerFast.from_pretrained(d, src_lang=SRC, tgt_lang=TGT)
    for line in LINES + TRICKY[:-1]:        # MBartTokenizer reads "<unk>", "</s>" in a text as special tokens
        assert slow(line)["input_ids"] == fast(line)["input_ids"] == ours.encode(line), repr(line)
    port = load_ensemble(d)[1][0]
    for src_line, ref in zip(LINES[:8], REFERENCES[:8]):
        target = slow(text_target=ref)["input_ids"]
        assert target[-2:] == [EOS, ours.end]
        src, prev = torch.tensor([ours.encode(src_line)]), torch.tensor([[ours.bos] + target[:-1]])
        with torch.no_grad():
            theirs = model(input_ids=src, decoder_input_ids=prev).logits.log_softmax(-1)
            mine = port.log_probs(port(src, prev))
        assert (mine - theirs).abs().max() < 1e-4


def _release(tmp_path):
    d = tmp_path / "release"
    shutil.copytree(model_dir(NAME), d)
    return d


def test_a_dictionary_in_another_order_is_flagged_and_mapped_by_piece(converted, tmp_path):
    """A dictionary fairseq-preprocess built in frequency order no longer holds each piece at its
    SentencePiece id + 1: MBartTokenizer would give the wrong ids. The converter says so by name
    (transformers_compatible false), and the port maps pieces by their strings."""
    d = _release(tmp_path)
    lines = {side: (d / f"dict.{side}.txt").read_text(encoding="utf-8").splitlines() for side in (SRC, TGT)}
    for side, ls in lines.items():
        ls[7], ls[13] = ls[13], ls[7]                 # ▁the and ▁to
        (d / f"dict.{side}.txt").write_text("".join(x + "\n" for x in ls), encoding="utf-8")
    assert convert_cli("--checkpoint", d / "model.pt", "--data-dir", d, "--out", tmp_path / "out") == 0
    p = read_config(tmp_path / "out")["porting"]
    assert not p["transformers_compatible"]
    assert any("MBartTokenizer puts every SentencePiece piece at its id + 1" in why and "at 2 ids" in why
               for why in p["transformers_incompatibilities"]), p["transformers_incompatibilities"]
    a, b = symbols()[7], symbols()[13]
    text = open_tokenizer(converted[NAME]).sp.decode_pieces([a, b])
    before, after = open_tokenizer(converted[NAME]).encode(text), open_tokenizer(tmp_path / "out").encode(text)
    assert after == [{11: 17, 17: 11}.get(i, i) for i in before] and 11 in before and 17 in before


def test_a_language_the_task_lacks_is_refused(tmp_path, capsys):
    d = _release(tmp_path)
    shutil.copyfile(d / f"dict.{SRC}.txt", d / "dict.xx_XX.txt")
    assert convert_cli("--checkpoint", d / "model.pt", "--data-dir", d, "--out", tmp_path / "out",
                       "--source-lang", "xx_XX") == 1
    assert "--source-lang xx_XX: not one of the task's --langs" in capsys.readouterr().err


@pytest.fixture(scope="module")
def both(converted):
    from parity.fairseq_hub import load_hub

    return open_tokenizer(converted[NAME]), load_hub(model_dir(NAME), "model.pt", SRC, TGT)


@requires_fairseq
def test_the_port_tokenizes_as_fairseqs_task(both):
    """ids as fairseq-generate binarizes the line and the task's inference dataset appends the source
    language's token; pieces as its SentencePiece writes them; decode as fairseq-generate's text (the
    target language's token, </s> and <s> left out) on every test and validation line and the special cases."""
    from parity.fairseq_hub import encode, hypothesis_text, model_input

    ours, hub = both
    for line in LINES + shipped.test_set(SRC, TGT, "valid")[0] + TRICKY:
        ids = ours.encode(line)
        assert ids == model_input(hub, encode(hub, line)).tolist(), repr(line)
        assert ours.encode_pieces(line) == hub.apply_bpe(line), repr(line)
        hyp = torch.tensor(ids[:-2] + [EOS, BOS] + ids[:3] + [ours.end])     # </s> and <s> inside, as hypotheses can hold
        assert (ours.symbols(hyp.tolist()), ours.decode(hyp.tolist())) == hypothesis_text(hub, hyp), repr(line)


@requires_fairseq
def test_fairseqs_task_fails_as_shipped_and_runs_mended():
    """fairseq #3169 / #4479: translation_from_pretrained_bart reads self.args, which fairseq 0.12's
    TranslationTask no longer sets: building its inference data raises AttributeError. The workbench's one
    mend (parity.fairseq_hub.mend_translation_from_pretrained_bart) keeps the task's Namespace as args.
    Run in a fresh interpreter: the mend, once made, holds for the process."""
    probe = """
import argparse, sys, torch
sys.path.insert(0, {root!r})
from fairseq.data import Dictionary
from fairseq.tasks.translation_from_pretrained_bart import TranslationFromPretrainedBARTTask as Task
args = argparse.Namespace(langs="en_XX,ro_RO", source_lang="en_XX", target_lang="ro_RO", data=".")
def probe():
    task = Task(args, Dictionary(), Dictionary())
    try:
        task.build_dataset_for_inference([torch.tensor([4, 2])], [2])
        return "ran"
    except AttributeError as e:
        return "AttributeError: " + str(e)
print(probe())
from parity.fairseq_hub import mend_translation_from_pretrained_bart
mend_translation_from_pretrained_bart()
mend_translation_from_pretrained_bart()         # idempotent
print(probe())
"""
    from parity.shipped import REFERENCE_RUNS

    out = subprocess.run([sys.executable, "-c", probe.format(root=str(REFERENCE_RUNS.parent))], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[0].startswith("AttributeError") and "'args'" in out[0] and out[1] == "ran", out


def test_the_recorded_hypotheses_end_on_the_target_language(converted):
    """fairseq's generator ends on [ro_RO]: every recorded hypothesis ends with it, none holds it before;
    </s> is an ordinary token (at the length cap a hypothesis ends without it, [ro_RO] forced)."""
    tok = open_tokenizer(converted[NAME])
    ended_without_eos = 0
    for setting in ("beam5_nbest5", "max_len"):
        rec = json.loads((shipped.RUNS / NAME / "generation" / f"{setting}.json").read_text())
        for hyps in rec["hypotheses"]:
            for h in hyps:
                assert h["tokens"][-1] == tok.end and tok.end not in h["tokens"][:-1]
                ended_without_eos += h["tokens"][-2:-1] != [EOS]
    assert ended_without_eos > 0


def test_an_mbart_directory_saved_by_transformers_converts_back(converted, tmp_path, capsys):
    """MBart and MBartTokenizer's save_pretrained (the tokenizer as tokenizer.json alone; the porting
    section removed as a hub download would be): `convert transformers` asks for the SentencePiece model
    by name, and with it gives back the same weights and vocabulary (MBartTokenizer's layout), and the
    port the same translations."""
    from transformers import MBartForConditionalGeneration, MBartTokenizer

    from porting import Translator
    from porting_cli import main

    original, hub = converted[NAME], tmp_path / "hub"
    MBartForConditionalGeneration.from_pretrained(original).save_pretrained(hub)
    MBartTokenizer.from_pretrained(original).save_pretrained(hub)
    config = json.loads((hub / "config.json").read_text())
    del config["porting"], config["langs"]                    # the direction then comes from tokenizer_config.json
    (hub / "config.json").write_text(json.dumps(config))
    assert main(["convert", "transformers", "--model", str(hub), "--out", str(tmp_path / "back")]) == 1
    assert "no sentencepiece.bpe.model" in capsys.readouterr().err
    shutil.copyfile(original / "sentencepiece.bpe.model", hub / "sentencepiece.bpe.model")
    assert main(["convert", "transformers", "--model", str(hub), "--out", str(tmp_path / "back")]) == 0
    back = tmp_path / "back"
    a, b = load_file(str(original / "model.safetensors")), load_file(str(back / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (original / "vocab.json").read_bytes() == (back / "vocab.json").read_bytes()
    assert read_config(back)["langs"] == [SRC, TGT] and read_config(back)["porting"]["family"] == "fairseq-mbart"
    ours, theirs = (Translator.from_pretrained(d) for d in (original, back))
    assert ours.translate(LINES[:40]) == theirs.translate(LINES[:40])


def test_a_piece_the_dictionary_lacks_is_unk(converted, tmp_path):
    d = tmp_path / "model"
    shutil.copytree(converted[NAME], d)
    vocab = json.loads((d / "vocab.json").read_text())
    piece = symbols()[7]                                # ▁the, id 11
    vocab[piece + "_gone"] = vocab.pop(piece)
    (d / "vocab.json").write_text(json.dumps(vocab))
    text = open_tokenizer(converted[NAME]).sp.decode_pieces([piece])
    before = open_tokenizer(converted[NAME]).encode(text)
    assert open_tokenizer(d).encode(text) == [UNK if i == 11 else i for i in before] and 11 in before


def test_the_exact_kernels_replay_fairseqs_mbart_bitwise(converted):
    """BARTModel's beamable encoder attention and the generator's eos on [ro_RO]: every hypothesis of every
    recorded setting, its score and its positional scores, is fairseq's bit for bit (where this CPU rounds
    as the recording's did)."""
    replay_exact(converted[NAME], NAME, decoder_start(open_tokenizer(converted[NAME])))


@requires_fairseq
def test_an_ensemble_agrees_with_fairseqs(tmp_path):
    """Two members (the shipped model and a scaled copy) through fairseq's own ensemble and the port's:
    the n-best lists identical, scores within the harness's tolerance, on greedy and beam 5."""
    report = perturbed_ensemble_parity(NAME, SRC, TGT, tmp_path)
    assert report["ok"], {s: g["causes"] for s, g in report["generation"].items()}
    assert all(g["identical"] == g["lines"] for g in report["generation"].values())


def test_the_direction_and_moses_options_are_refused_by_name(converted):
    from porting.tokenizer import DirectionError

    with pytest.raises(DirectionError, match="translates en_XX to ro_RO only"):
        open_tokenizer(converted[NAME], target_lang="de_DE")
    with pytest.raises(DirectionError, match="a SentencePiece model normalises its input itself"):
        open_tokenizer(converted[NAME], normalize_punctuation=True)
