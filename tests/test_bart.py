"""The BART family (issue 33) on the shipped summarizer (bart-man): the converter's conventions, the
native tokenizer against fairseq's BART hub, transformers' Bart and BartTokenizer(Fast) loading the
conversion, the read-back, and the field's faults refused by name."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from parity import shipped
from porting.format import BOS, EOS, UNK, DecoderStart, read_config
from porting.tokenizer import open_tokenizer
from tests.conftest import requires_fairseq
from tests.helpers import convert_cli, model_dir, perturbed_ensemble_parity, replay_exact, trusted_load

NAME = "bart-man"
LINES = shipped.test_set("doc", "sum")[0]
# what GPT-2's regex and byte table treat specially, and what a manual page holds
TRICKY = ["", " ", "  leading and trailing  ", "tabs\tand\nnewlines\r\n", "it's we'll they'd I'M",
          "café naïve Ünïcödé", "emoji 👍🏽 and 👨‍👩‍👧 zwj", "\x00\x01 control \x7f", "١٢٣ ٤٥ digits", "\ufeffBOM",
          "--long-option=VALUE [-h|--help] <file>", "<unk> <s> </s> as text"]


def test_the_conversion_keeps_fairseqs_conventions(converted):
    config = read_config(converted[NAME])
    p = config["porting"]
    assert p["family"] == "fairseq-bart" and config["model_type"] == "bart" and p["transformers_compatible"]
    arch = p["architecture"]
    # BART's, read from the checkpoint: post-norm, learned positions, layernorm_embedding, unscaled embeddings
    assert (arch["encoder_normalize_before"], arch["encoder_learned_pos"], arch["layernorm_embedding"],
            arch["no_scale_embedding"], arch["activation_fn"]) == (False, True, True, True, "gelu")
    tensors = load_file(str(converted[NAME] / "model.safetensors"))
    # fairseq's learned table: positions from padding_idx + 1 = 2, two leading rows (Bart's offset 2)
    assert tensors["model.encoder.embed_positions.weight"].shape[0] == arch["max_source_positions"] + 2
    vocab = json.loads((converted[NAME] / "vocab.json").read_text())
    gpt2 = json.loads((model_dir(NAME) / "encoder.json").read_text())
    symbols = [line.split()[0] for line in (model_dir(NAME) / "dict.doc.txt").read_text().splitlines()]
    # vocab.json: each GPT-2 piece at fairseq's id (dictionary line + 4 specials), not at its GPT-2 id
    by_gpt2 = {str(i): piece for piece, i in gpt2.items()}
    assert all(vocab[by_gpt2[s]] == i + 4 for i, s in enumerate(symbols))
    generation = json.loads((converted[NAME] / "generation_config.json").read_text())
    assert (generation["decoder_start_token_id"], generation["forced_bos_token_id"]) == (EOS, BOS)


def test_transformers_loads_it_and_agrees(converted):
    """BartForConditionalGeneration with nothing missing; BartTokenizer and BartTokenizerFast give the
    port's ids on every test line and on what GPT-2's regex treats specially; teacher-forced log-probs
    within 1e-4 of the port's (float32 reductions in another order)."""
    from transformers import BartForConditionalGeneration, BartTokenizer, BartTokenizerFast

    from porting.model.load import load_ensemble

    d = converted[NAME]
    model, info = BartForConditionalGeneration.from_pretrained(d, output_loading_info=True)
    assert not any(info.values()), info
    ours = open_tokenizer(d)
    slow, fast = BartTokenizer.from_pretrained(d), BartTokenizerFast.from_pretrained(d)
    for line in LINES + TRICKY[:-1]:     # BartTokenizer reads "<unk>" in a text as the special token, fairseq as text
        # cut as the hub cuts (truncation=True: model_max_length, <s> and </s> kept)
        ids = ours.encode(line)
        assert slow(line, truncation=True)["input_ids"] == fast(line, truncation=True)["input_ids"] == ids, repr(line)
    port = load_ensemble(d)[1][0]
    refs = shipped.test_set("doc", "sum")[1]
    for src_line, ref in zip(LINES[:8], refs[:8]):
        src, tgt = torch.tensor([ours.encode(src_line)]), ours.encode(ref)
        prev = torch.tensor([[EOS] + tgt[:-1]])
        with torch.no_grad():
            theirs = model(input_ids=src, decoder_input_ids=prev).logits.log_softmax(-1)
            mine = port.log_probs(port(src, prev))
        assert (mine - theirs).abs().max() < 1e-4


@pytest.fixture(scope="module")
def both(converted):
    from parity.fairseq_hub import load_hub

    return open_tokenizer(converted[NAME]), load_hub(model_dir(NAME), "model.pt", "doc", "sum")


@requires_fairseq
def test_the_port_tokenizes_as_fairseqs_bart_hub(both):
    """ids as BARTHubInterface.encode gives them (<s> first, </s> last), pieces as its BPE writes them,
    on every test and validation line and the special cases; decode as fairseq-generate's text."""
    from parity.fairseq_hub import encode, hypothesis_text

    ours, hub = both
    for line in LINES + shipped.test_set("doc", "sum", "valid")[0] + TRICKY:
        ids = ours.encode(line)
        assert ids == encode(hub, line).tolist() == hub.encode(line).tolist(), repr(line)
        assert ours.encode_pieces(line) == hub.apply_bpe(line), repr(line)
        assert (ours.symbols(ids), ours.decode(ids)) == hypothesis_text(hub, torch.tensor(ids)), repr(line)


@requires_fairseq
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=60))
@example("a" * 400)                  # past the positions: the hub cuts to max_positions - 2, and so does the port
def test_any_text_tokenizes_as_fairseqs_bart_hub(both, text):
    ours, hub = both
    assert ours.encode(text) == hub.encode(text).tolist()


def test_a_piece_the_dictionary_lacks_is_unk(converted, tmp_path):
    """fairseq looks each GPT-2 id up in its dictionary; one it lacks is <unk> (encode_line), and the port
    does the same, which BartTokenizer does too (its vocab.json lacks the piece)."""
    d = tmp_path / "model"
    shutil.copytree(converted[NAME], d)
    vocab = json.loads((d / "vocab.json").read_text())
    kernel = vocab.pop("Ġkernel")
    vocab["kernel_gone"] = kernel                      # the id stays, the piece is no longer there
    (d / "vocab.json").write_text(json.dumps(vocab))
    text = "print the kernel ring buffer"
    before = open_tokenizer(converted[NAME]).encode(text)
    assert kernel in before
    assert open_tokenizer(d).encode(text) == [UNK if i == kernel else i for i in before]


@requires_fairseq
def test_a_gpt2_id_the_dictionary_lacks_crashes_the_hub_and_is_unk_here(tmp_path):
    """The shipped release with one dictionary line renamed (GPT-2's " the" gone, the rows unchanged):
    BARTHubInterface.encode appends the missing id to the dictionary, past the embedding (the model then
    raises IndexError); fairseq_hub.encode, fairseq-generate's binarizer and the port make it <unk>."""
    from parity.fairseq_hub import encode, load_hub

    d = tmp_path / "release"
    shutil.copytree(model_dir(NAME), d)
    the = str(json.loads((d / "encoder.json").read_text())["Ġthe"])
    for side in ("doc", "sum"):
        lines = (d / f"dict.{side}.txt").read_text().splitlines()
        (d / f"dict.{side}.txt").write_text("".join(
            ("madeupword0000 " + line.split()[1] if line.split()[0] == the else line) + "\n" for line in lines))
    hub = load_hub(d, "model.pt", "doc", "sum")
    rows = hub.models[0].encoder.embed_tokens.num_embeddings
    text = "print the kernel ring buffer"
    mended = encode(hub, text).tolist()                           # first: the hub's encode adds to the dictionary
    assert UNK in mended and max(mended) < rows
    assert max(hub.encode(text).tolist()) >= rows                 # appended past the embedding
    with pytest.raises(IndexError):
        hub.models[0].encoder(hub.encode(text)[None], src_lengths=None)
    assert convert_cli("--checkpoint", d / "model.pt", "--data-dir", d, "--out", tmp_path / "out") == 0
    assert open_tokenizer(tmp_path / "out").encode(text) == mended


def _release(tmp_path, mutate) -> tuple:
    """A copy of the shipped release directory with its checkpoint changed by `mutate(state)`."""
    d = tmp_path / "release"
    shutil.copytree(model_dir(NAME), d)
    state = trusted_load(d / "model.pt")
    mutate(state)
    torch.save(state, d / "model.pt")
    return d, tmp_path / "out"


def test_a_separate_output_projection_is_refused_by_name(tmp_path, capsys):
    """transformers #19260: fairseq 0.12 BART checkpoints carry decoder.output_projection.weight beside the
    tied embedding. Equal to it (the shipped model), it is the tie; differing, the converter refuses it by
    name rather than drop one of the two."""
    def untie(state):
        w = state["model"]["decoder.output_projection.weight"]
        state["model"]["decoder.output_projection.weight"] = w + 0.01
    d, out = _release(tmp_path, untie)
    assert convert_cli("--checkpoint", d / "model.pt", "--data-dir", d, "--out", out) == 1
    err = capsys.readouterr().err
    assert "decoder.output_projection.weight should be tied to decoder.embed_tokens.weight" in err and not out.exists()


def test_wrong_bpe_files_are_refused_by_name(tmp_path, capsys):
    d, out = _release(tmp_path, lambda state: None)
    (d / "encoder.json").write_text(json.dumps({"a": 0}))
    assert convert_cli("--checkpoint", d / "model.pt", "--data-dir", d, "--out", out) == 1
    assert "GPT-2 ids that encoder.json lacks" in capsys.readouterr().err
    (d / "encoder.json").unlink()
    assert convert_cli("--checkpoint", d / "model.pt", "--data-dir", d, "--out", out) == 1
    assert "encoder.json: missing" in capsys.readouterr().err and not out.exists()


def test_a_bart_directory_saved_by_transformers_converts_back(converted, tmp_path, capsys):
    """Bart and BartTokenizer's save_pretrained (one shared embedding; the tokenizer as tokenizer.json alone;
    the porting section removed as a hub download would be): `convert transformers` asks for GPT-2's
    encoder.json by name, and with it gives back the same weights and tokenizer files, and the port the
    same summaries."""
    from transformers import BartForConditionalGeneration, BartTokenizer

    from porting import Translator
    from porting_cli import main

    original, hub = converted[NAME], tmp_path / "hub"
    BartForConditionalGeneration.from_pretrained(original).save_pretrained(hub)
    BartTokenizer.from_pretrained(original).save_pretrained(hub)
    config = json.loads((hub / "config.json").read_text())
    del config["porting"]
    (hub / "config.json").write_text(json.dumps(config))
    assert sorted(p.name for p in hub.iterdir() if p.name.startswith("tok")) == ["tokenizer.json", "tokenizer_config.json"]
    assert main(["convert", "transformers", "--model", str(hub), "--out", str(tmp_path / "back")]) == 1
    assert "no encoder.json" in capsys.readouterr().err
    shutil.copyfile(model_dir(NAME) / "encoder.json", hub / "encoder.json")
    assert main(["convert", "transformers", "--model", str(hub), "--out", str(tmp_path / "back")]) == 0
    back = tmp_path / "back"
    a, b = load_file(str(original / "model.safetensors")), load_file(str(back / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("vocab.json", "merges.txt", "encoder.json"):
        assert (original / name).read_bytes() == (back / name).read_bytes(), name
    assert read_config(back)["porting"]["family"] == "fairseq-bart"
    ours, theirs = (Translator.from_pretrained(d) for d in (original, back))
    assert ours.translate(LINES[:40]) == theirs.translate(LINES[:40])


def test_the_exact_kernels_replay_fairseqs_bart_bitwise(converted):
    """fairseq's BART runs its beamable encoder attention in beam search (keys once per sentence, einsums
    over the beam; its TransformerModel never does): the exact kernels follow it, and every hypothesis of
    every recorded setting, its score and its positional scores, is fairseq's bit for bit, where this CPU
    rounds as the recording's did (the first layer's teacher-forced output, the probe)."""
    replay_exact(converted[NAME], NAME, DecoderStart(EOS, (BOS,)))


@requires_fairseq
def test_an_ensemble_agrees_with_fairseqs(tmp_path):
    """Two members (the shipped model and a scaled copy) through fairseq's own ensemble and the port's: the
    n-best lists identical, on greedy and beam 5. fairseq's BART hub would run the first member alone
    (BARTModel.from_pretrained hands BARTHubInterface x["models"][0]): the harness's original holds both,
    as fairseq-generate does."""
    from fairseq.models.bart import BARTModel

    from parity.fairseq_hub import fairseq_unpickling, load_hub, quiet_fairseq

    report = perturbed_ensemble_parity(NAME, "doc", "sum", tmp_path)
    assert report["ok"], {s: g["causes"] for s, g in report["generation"].items()}
    assert all(g["identical"] == g["lines"] for g in report["generation"].values())
    release = tmp_path / "release"
    with fairseq_unpickling(), quiet_fairseq():
        hub = BARTModel.from_pretrained(str(release), checkpoint_file="model.pt:model2.pt", data_name_or_path=".",
                                        bpe="gpt2", gpt2_encoder_json=str(release / "encoder.json"),
                                        gpt2_vocab_bpe=str(release / "vocab.bpe"))
    assert len(hub.models) == 1 and len(load_hub(release, ["model.pt", "model2.pt"], "doc", "sum").models) == 2
