"""`porting convert fairseq ...` and `porting convert torch ...`."""
from __future__ import annotations

import sys
from pathlib import Path


def add_arguments(p) -> None:
    from converters.ctranslate2 import QUANTIZATIONS
    from porting_cli import help_formatter, verbosity_options

    sub = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    nested = {"parents": [verbosity_options()], "formatter_class": help_formatter()}
    f = sub.add_parser("fairseq", help="fairseq checkpoint(s) + dictionaries + BPE codes or SentencePiece model "
                                       "-> model directory",
                       description="Convert fairseq transformer checkpoints. Several --checkpoint = ensemble members. "
                                   "Bilingual models (task translation) read dict.<lang>.txt and bpecodes; multilingual "
                                   "ones (translation_multi_simple_epoch: M2M-100, NLLB-200) one shared dictionary and "
                                   "a SentencePiece model, and keep every language.",
                       **nested)
    f.add_argument("--checkpoint", type=Path, action="append", required=True,
                   help="a model*.pt; repeat for an ensemble (the first is the primary model)")
    f.add_argument("--data-dir", type=Path, required=True,
                   help="directory with dict.<lang>.txt and bpecodes (bilingual) or the shared dictionary and the "
                        "SentencePiece model (multilingual)")
    f.add_argument("--dict", type=Path, dest="dictionary",
                   help="multilingual: the shared dictionary (default: model_dict*.txt, dictionary.txt, data_dict*.txt "
                        "or dict.txt in --data-dir)")
    f.add_argument("--sentencepiece", type=Path, help="multilingual: the SentencePiece model (default: the one *.model "
                                                      "in --data-dir)")
    f.add_argument("--lang-tok-style", help="multilingual: fairseq's --lang-tok-style, multilingual (__xx__) or mbart "
                                            "([xx]) (default: as the checkpoint records it)")
    f.add_argument("--out", type=Path, required=True, help="output directory (refused if it exists, unless --force)")
    f.add_argument("--source-lang", help="bilingual: default read from the checkpoint")
    f.add_argument("--target-lang", help="bilingual: default read from the checkpoint")
    f.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="the type the weights are stored in (float16/bfloat16: half the size, rounded)")
    f.add_argument("--license", help="the model's license (an SPDX id or the hub's name, e.g. mit, cc-by-nc-4.0) "
                                     "for the model card; fairseq checkpoints do not record one")
    f.add_argument("--force", action="store_true", help="replace an existing output")
    h = sub.add_parser("transformers", help="a transformers FSMT, M2M100, Bart or MBart directory (as on the hub) -> "
                                            "model directory",
                       description="Read a transformers directory back as the fairseq model it was made from, and "
                                   "write our layout: FSMT (config.json, model.safetensors or pytorch_model.bin, "
                                   "vocab-src.json, vocab-tgt.json, merges.txt), M2M100 with M2M100Tokenizer "
                                   "(config.json, the weights, vocab.json, sentencepiece.bpe.model, "
                                   "tokenizer_config.json), Bart with BartTokenizer (vocab.json and merges.txt, or "
                                   "tokenizer.json; GPT-2's encoder.json beside them) or MBart with MBartTokenizer "
                                   "(sentencepiece.bpe.model; tokenizer_config.json or config.json names the "
                                   "direction).", **nested)
    h.add_argument("--model", type=Path, required=True, help="the FSMT, M2M100, Bart or MBart directory")
    h.add_argument("--out", type=Path, required=True, help="output directory (refused if it exists, unless --force)")
    h.add_argument("--license", help="the model's license for the model card (e.g. apache-2.0)")
    h.add_argument("--force", action="store_true", help="replace an earlier output of the workbench")
    c = sub.add_parser("ctranslate2", help="a converted directory -> a CTranslate2 model directory",
                       description="Write a CTranslate2 model from a converted directory through CTranslate2's "
                                   "spec API (no fairseq, no unpickling). CTranslate2 runs one model: an "
                                   "ensemble's first member is written.", **nested)
    c.add_argument("--model", type=Path, required=True, help="a converted model directory (porting convert fairseq)")
    c.add_argument("--out", type=Path, required=True, help="the CTranslate2 model directory to write")
    c.add_argument("--quantization", choices=QUANTIZATIONS, default=None,
                   help="CTranslate2's weight type (default: float32, as converted)")
    c.add_argument("--force", action="store_true", help="replace an earlier output of the workbench")
    t = sub.add_parser("torch", help="any PyTorch pickle (e.g. pytorch_model.bin) -> model.safetensors", **nested)
    t.add_argument("--input", "--in", dest="input", type=Path, required=True,
                   help="the pickle (--in: its former name)")
    t.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    t.add_argument("--force", action="store_true", help="replace an existing file")


def run(args) -> int:
    """Each source's converter reports what it wrote, or raises its error: one line, exit 1."""
    from converters.ctranslate2.convert import CTranslate2Error
    from converters.fairseq.convert import ConversionError
    from converters.io.torch_pickle import TorchConversionError

    convert = {"fairseq": _fairseq, "transformers": _transformers, "ctranslate2": _ctranslate2, "torch": _torch}
    try:
        summary = convert[args.source](args)
    except (ConversionError, CTranslate2Error, TorchConversionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {summary}")
    return 0


def _parameters(provenance: dict) -> int:
    return sum(m["parameters"] for m in provenance["members"].values())


def _fairseq(args) -> str:
    from converters.fairseq.convert import convert

    prov = convert(args.checkpoint, args.data_dir, args.out, args.source_lang, args.target_lang, args.dtype,
                   args.force, args.license, args.dictionary, args.sentencepiece, args.lang_tok_style)
    return f"{len(prov['members'])} member(s), {_parameters(prov):,} parameters stored"


def _transformers(args) -> str:
    from converters.fairseq.from_transformers import convert_transformers

    prov = convert_transformers(args.model, args.out, args.force, args.license)
    return f"from {args.model}, {_parameters(prov):,} parameters stored"


def _ctranslate2(args) -> str:
    from converters.ctranslate2.convert import convert

    done = convert(args.model, args.out, args.quantization, args.force)
    return f"CTranslate2 model, {done['quantization']} weights" + "".join(f"; left out: {n}" for n in done["left_out"])


def _torch(args) -> str:
    from converters.io.torch_pickle import convert_pickle

    report = convert_pickle(args.input, args.out, args.force)
    return (f"{report['tensors']} tensors, {report['bytes']:,} bytes"
            + (f"; shared storage stored once: {report['aliases']}" if report["aliases"] else ""))
