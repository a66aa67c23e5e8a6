"""A converted directory -> a CTranslate2 model directory, through CTranslate2's own spec API.

    porting convert ctranslate2 --model OUT --out CT2_DIR [--quantization int8] [--force]

CTranslate2's fairseq converter imports fairseq and unpickles the checkpoint with code execution
allowed (``--unsafe_deserialization`` under torch >= 2.6). Here the weights come from our checked
safetensors through the native loader (porting.model.load: layout, ties and derived tables already
verified), and CTranslate2's ``TransformerSpec`` receives them: the spec validates names, shapes and
dtypes, and applies the quantization. Every architecture option either maps or is refused by name.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from converters import PEERS_HINT
from converters.ctranslate2 import QUANTIZATIONS
from converters.io.atomic import OutputExists, atomic_dir
from porting.format import (
    BART,
    LANG_TOK_STYLES,
    MBART,
    PAD,
    Arch,
    ConfigError,
    family,
    language_tokens,
    read_config,
    tokenizer_files,
)
from porting.generation.options import fairseq_defaults
from porting.model.layout import derived_tensors
from porting.tokenizer import vocabularies as porting_vocabularies
from porting.translator import default_options

log = logging.getLogger(__name__)

# fairseq's activation_fn -> CTranslate2's Activation member name (fairseq's "gelu" is the erf one)
ACTIVATIONS = {"relu": "RELU", "gelu": "GELU"}


class CTranslate2Error(Exception):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s), nothing written:\n" + "\n".join(f"  - {p}" for p in problems))


def inexpressible(arch: Arch) -> list[str]:
    """Options CTranslate2's Transformer cannot take (it has one pre_norm flag, one head count and
    one final-norm flag for both sides), each named with its value."""
    out = []
    if arch.encoder_normalize_before != arch.decoder_normalize_before:
        out.append(f"encoder_normalize_before={arch.encoder_normalize_before} with decoder_normalize_before="
                   f"{arch.decoder_normalize_before}: CTranslate2 has one pre_norm for both sides")
    if arch.encoder_attention_heads != arch.decoder_attention_heads:
        out.append(f"encoder_attention_heads={arch.encoder_attention_heads} with decoder_attention_heads="
                   f"{arch.decoder_attention_heads}: CTranslate2 has one head count")
    if arch.decoder_normalize_before and not arch.decoder_final_norm:
        out.append("a pre-norm decoder without its final layer norm (no_decoder_final_norm): CTranslate2's "
                   "no_final_norm would drop the encoder's too")
    if arch.activation_fn not in ACTIVATIONS:
        out.append(f"activation_fn {arch.activation_fn!r}: mapped are {', '.join(ACTIVATIONS)}")
    return out


def as_ctranslate2(symbols: list[str]) -> list[str]:
    """fairseq's symbols in id order as CTranslate2 names them: it calls the padding symbol <blank>."""
    return ["<blank>" if t == "<pad>" else t for t in symbols]


def vocabularies(model_dir: Path) -> tuple[list[str], list[str]]:
    """(source, target) vocabularies, as the family's tokenizer numbers them (a multilingual model's
    language tokens included: CTranslate2 is given them as tokens, `__en__` first in the source and
    `__fr__` as the target prefix, as fairseq places them)."""
    src, tgt = porting_vocabularies(model_dir)
    return as_ctranslate2(src), as_ctranslate2(tgt)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().contiguous().numpy()


def _linear(spec, module) -> None:
    spec.weight = _np(module.weight)
    if module.bias is not None:
        spec.bias = _np(module.bias)


def _norm(spec, module) -> None:
    spec.gamma, spec.beta = _np(module.weight), _np(module.bias)


def _fused(spec, modules) -> None:
    """Projections CTranslate2 runs as one matrix (q,k,v for self-attention; k,v for the encoder's):
    weights stacked along the output dimension, [3*d, d] or [2*d, d]."""
    spec.weight = np.concatenate([_np(m.weight) for m in modules])
    spec.bias = np.concatenate([_np(m.bias) for m in modules])


def _attention(spec, attn, layer_norm, self_attention: bool) -> None:
    # CTranslate2 scales queries by 1/sqrt(head_dim) itself, as fairseq does in forward: no folding here
    if self_attention:
        _fused(spec.linear[0], (attn.q_proj, attn.k_proj, attn.v_proj))
    else:
        _linear(spec.linear[0], attn.q_proj)
        _fused(spec.linear[1], (attn.k_proj, attn.v_proj))
    _linear(spec.linear[-1], attn.out_proj)
    _norm(spec.layer_norm, layer_norm)


def _ffn(spec, layer) -> None:
    _norm(spec.layer_norm, layer.final_layer_norm)
    _linear(spec.linear_0, layer.fc1)
    _linear(spec.linear_1, layer.fc2)


def _embeddings(spec, side, arch: Arch, name: str) -> None:
    embeddings = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings  # one source factor
    embeddings.weight = _np(side.embed_tokens.weight)
    # fairseq numbers positions from padding_idx + 1: CTranslate2's table starts at that row
    table = side.embed_positions.weight if side.learned else derived_tensors(arch)[f"model.{name}.embed_positions.weight"]
    spec.position_encodings.encodings = _np(table[PAD + 1:])
    spec.scale_embeddings = side.scale
    if side.layernorm_embedding is not None:
        _norm(spec.layernorm_embedding, side.layernorm_embedding)


def build_spec(model_dir: Path):
    """The CTranslate2 TransformerSpec of a converted directory's first member."""
    from ctranslate2.specs import common_spec, transformer_spec

    from porting.model.load import load_member

    config = read_config(model_dir)
    arch = Arch.from_config(config["porting"]["architecture"])
    problems = inexpressible(arch)
    tokens = language_tokens(config)
    if tokens is not None and tokens.replacing_bos_eos:
        problems.append("lang_tok_replacing_bos_eos: the language token would be the decoder's start token, and "
                        "CTranslate2 has one start token per model")
    if problems:
        raise CTranslate2Error(problems)
    model = load_member(model_dir, config["porting"]["ensemble"][0], config)
    spec = transformer_spec.TransformerSpec.from_config(
        (arch.encoder_layers, arch.decoder_layers), arch.encoder_attention_heads,
        pre_norm=arch.encoder_normalize_before, activation=getattr(common_spec.Activation, ACTIVATIONS[arch.activation_fn]),
        layernorm_embedding=arch.layernorm_embedding,
        # 0: every head (no alignment was trained), as CTranslate2's own fairseq converter writes it
        alignment_heads=0)
    enc, dec = model.encoder, model.decoder
    _embeddings(spec.encoder, enc, arch, "encoder")
    _embeddings(spec.decoder, dec, arch, "decoder")
    for layer_spec, layer in zip(spec.encoder.layer, enc.layers):
        _attention(layer_spec.self_attention, layer.self_attn, layer.self_attn_layer_norm, self_attention=True)
        _ffn(layer_spec.ffn, layer)
    for layer_spec, layer in zip(spec.decoder.layer, dec.layers):
        _attention(layer_spec.self_attention, layer.self_attn, layer.self_attn_layer_norm, self_attention=True)
        _attention(layer_spec.attention, layer.encoder_attn, layer.encoder_attn_layer_norm, self_attention=False)
        _ffn(layer_spec.ffn, layer)
    if enc.layer_norm is not None:
        _norm(spec.encoder.layer_norm, enc.layer_norm)
    if dec.layer_norm is not None:
        _norm(spec.decoder.layer_norm, dec.layer_norm)
    spec.decoder.projection.weight = _np(dec.output_projection.weight)
    source, target = vocabularies(model_dir)
    spec.register_source_vocabulary(source)
    spec.register_target_vocabulary(target)
    spec.config.decoder_start_token, spec.config.eos_token, spec.config.add_source_eos = start_and_end(config)
    return spec, config


def start_and_end(config: dict) -> tuple[str, str, bool]:
    """(decoder_start_token, eos_token, add_source_eos) as fairseq runs the family: the decoder starts
    from </s>, the search ends on it and the source ends with it (CTranslate2 appends it); mBART's
    generator starts from and ends on the target language's token, and its source ends with </s> and
    the source language's token, which the tokenizer puts there (so CTranslate2 appends nothing)."""
    if family(config) == MBART:
        token = LANG_TOK_STYLES["mbart"].format(config["langs"][1])
        return token, token, False
    return "</s>", "</s>", True


# CTranslate2's DataType enum (include/ctranslate2/types.h), in its order: model.bin stores each
# variable's type as its index (its spec writer's _dtype_to_type_id lists the same); must match it
DATA_TYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


def stored_weight_type(model_dir: Path) -> str:
    """The type a CTranslate2 model's weight matrices were written in ("float32", "int8", "float16"...),
    read from model.bin's variable headers, the data skipped: what the model was quantized to when
    written, which its compute type does not say where the CPU converts it (float16 weights computed
    in float32 were still rounded to float16). CTranslate2's binary layout (its spec writer's
    ``_serialize``): version, name, revision, count, then per variable its name, rank, dims, type and
    byte count before the data."""
    import struct

    types = set()
    with open(Path(model_dir) / "model.bin", "rb") as f:
        def read(fmt: str):
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def string() -> str:
            return f.read(read("H")).rstrip(b"\0").decode("utf-8")
        read("I")                                                  # binary version
        string()                                                   # spec name
        read("I")                                                  # spec revision
        for _ in range(read("I")):
            name, rank = string(), read("B")
            f.seek(4 * rank, 1)                                    # dims
            dtype, size = read("B"), read("I")
            f.seek(size, 1)                                        # the data
            if name.endswith("weight") and rank == 2:
                types.add(DATA_TYPES[dtype])
    return types.pop() if len(types) == 1 else "+".join(sorted(types))


# The converted directory's tokenizer, carried inside the CTranslate2 directory: CTranslate2 takes and
# gives pieces, and what turns text into them and back (with a multilingual model's language tokens,
# their placement and the target prefix) is the model's own; the harness and users read it from here.
TOKENIZER_DIR = "tokenizer"


def copy_tokenizer(model_dir: Path, config: dict, out: Path) -> None:
    """config.json and the family's tokenizer files (porting.format.tokenizer_files), copied as they are."""
    out.mkdir()
    for name in ("config.json", *tokenizer_files(config)):
        shutil.copyfile(model_dir / name, out / name)


def readme(model_dir: Path, config: dict, quantization: str | None) -> str:
    """What the directory is and the exact call that runs it as fairseq would: pieces in (the language
    token placed, no </s>: CTranslate2 appends it, add_source_eos), the forced target-language token as
    the target prefix, the model's own beam, length penalty and cap."""
    from converters import __version__

    tokens = language_tokens(config)
    generation = {**fairseq_defaults(), **default_options(model_dir)}
    src, tgt = tokens.default_direction() if tokens else tuple(config["langs"])
    direction = f', source_lang="{src}", target_lang="{tgt}"' if tokens else ""
    return f"""# CTranslate2 model

Converted by porting-workbench {__version__} (`porting convert ctranslate2`) from `{model_dir.name}`
({family(config)}), weights {quantization or "float32"}. `{TOKENIZER_DIR}/` holds that model's tokenizer
files and config: CTranslate2 takes and gives pieces, and turning text into them (and back) is the
original model's business.

- {_MBART_ENDS.format(start_and_end(config)[0]) if family(config) == MBART else _SOURCE_EOS}
- {_PLACEMENT if tokens else _BOS_FORCED if family(config) == BART else "Nothing is forced: no `target_prefix`."}
- fairseq's length cap is `max_len_a * source_length + max_len_b` tokens before `</s>`; CTranslate2's
  `max_decoding_length` is one number: `max_len_b` below (`max_len_a` is {generation["max_len_a"]} here).

```python
import ctranslate2
from porting.tokenizer import open_tokenizer, vocabularies

tok = open_tokenizer("THIS_DIR/{TOKENIZER_DIR}"{direction})
source_symbols, target_symbols = vocabularies("THIS_DIR/{TOKENIZER_DIR}")
target_ids = {{s: i for i, s in enumerate(target_symbols)}}
translator = ctranslate2.Translator("THIS_DIR")
ids = tok.encode("{_EXAMPLE}")                     # fairseq's ids, language token placed, </s> last
source = [source_symbols[i] for i in {_SOURCE_IDS[family(config) == MBART]}
prefix = [target_symbols[i] for i in tok.prefix]        # the forced target-language token, if any
result = translator.translate_batch([source], target_prefix=[prefix] if prefix else None,
                                    beam_size={generation["beam"]}, length_penalty={generation["lenpen"]},
                                    max_decoding_length={generation["max_len_b"]})
print(tok.decode([target_ids.get(p, 3) for p in result[0].hypotheses[0]]))
```

`porting parity --original … --port ctranslate2:THIS_DIR` checks this directory against the original.
"""


_EXAMPLE = "The file could not be opened."
# the source's ids as CTranslate2 is given them: without </s> (add_source_eos), or as they are (mBART's)
_SOURCE_IDS = {False: "ids[:-1]]          # without </s>: CTranslate2 appends it",
               True: "ids]               # as they are: </s> and the language token last"}
_SOURCE_EOS = ("`add_source_eos` is on: CTranslate2 appends `</s>` to every source, as fairseq does. Do not append\n"
               "  it yourself: a second `</s>` changes the translation.")
_MBART_ENDS = ("As mBART's fairseq task: the source ends with `</s>` and the source language's token (the tokenizer\n"
               "  puts both; `add_source_eos` is off), and the decoder starts from, and the search ends on, `{}`\n"
               "  (the model's `decoder_start_token` and `eos_token`); `</s>` is an ordinary token in the output.")
_BOS_FORCED = "`<s>` is forced as the first target token, as fairseq's BART hub forces it: give it as `target_prefix`."
_PLACEMENT = ("The source's language token is placed as fairseq's task places it (the tokenizer does it), and the\n"
              "  target language's token is forced first: give it as `target_prefix`.")


def convert(model_dir: Path, out: Path, quantization: str | None = None, force: bool = False) -> dict:
    """Write the CTranslate2 model; returns what was written and what it leaves out."""
    model_dir, out = Path(model_dir), Path(out)
    try:
        import ctranslate2  # noqa: F401  (only: is it installed? the spec API below needs it)
    except ImportError:
        raise CTranslate2Error([f"convert ctranslate2 needs CTranslate2, which is not installed here: {PEERS_HINT}"]) from None
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise CTranslate2Error([f"--quantization {quantization!r}: choose one of {', '.join(QUANTIZATIONS)}"])
    try:
        spec, config = build_spec(model_dir)
        text = readme(model_dir, config, quantization)
    except ConfigError as e:
        raise CTranslate2Error([f"--model {model_dir}: {e}"]) from None
    spec.validate()
    spec.optimize(quantization=quantization)
    members = config["porting"]["ensemble"]
    left_out = [f"ensemble members {', '.join(members[1:])}: CTranslate2 runs one model; the first is written"] \
        if len(members) > 1 else []
    try:
        with atomic_dir(out, force, [model_dir]) as tmp:
            spec.save(str(tmp))
            copy_tokenizer(model_dir, config, tmp / TOKENIZER_DIR)
            (tmp / "README.md").write_text(text, encoding="utf-8")
    except OutputExists as e:
        raise CTranslate2Error([str(e)]) from None
    for note in left_out:
        log.warning(note)
    return {"out": str(out), "quantization": quantization or "float32", "left_out": left_out}
