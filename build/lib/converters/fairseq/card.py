"""The small text files of a converted directory: config, tokenizer and generation settings, model card."""
from __future__ import annotations

import json

from converters.fairseq.arch import Architecture


def fsmt_config(arch: Architecture, src: str, tgt: str, src_vocab: int, tgt_vocab: int, dtype: str) -> dict:
    """transformers' FSMTConfig fields, filled from fairseq's options."""
    return {
        "architectures": ["FSMTForConditionalGeneration"],
        "model_type": "fsmt",
        "langs": [src, tgt],
        "src_vocab_size": src_vocab,
        "tgt_vocab_size": tgt_vocab,
        "activation_function": arch.activation_fn,
        "d_model": arch.embed_dim,
        "max_length": 200,
        "max_position_embeddings": arch.max_source_positions,
        "encoder_ffn_dim": arch.encoder_ffn_embed_dim,
        "encoder_layers": arch.encoder_layers,
        "encoder_attention_heads": arch.encoder_attention_heads,
        "encoder_layerdrop": 0.0,
        "decoder_ffn_dim": arch.decoder_ffn_embed_dim,
        "decoder_layers": arch.decoder_layers,
        "decoder_attention_heads": arch.decoder_attention_heads,
        "decoder_layerdrop": 0.0,
        "attention_dropout": arch.attention_dropout,
        "dropout": arch.dropout,
        "activation_dropout": arch.activation_dropout,
        "init_std": 0.02,
        # fairseq's decoder starts from </s>; without this transformers starts from <s> (garbage out)
        "decoder_start_token_id": 2,
        "is_encoder_decoder": True,
        "scale_embedding": not arch.no_scale_embedding,
        # transformers ties FSMT's embeddings only when this is true, and then all three of them;
        # see converters/README.md "Ties" for the separate-dictionary case.
        "tie_word_embeddings": arch.share_decoder_input_output_embed,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "forced_eos_token_id": 2,
        "torch_dtype": dtype,
    }


def tokenizer_config(src: str, tgt: str, arch: Architecture) -> dict:
    return {"tokenizer_class": "FSMTTokenizer", "langs": [src, tgt],
            "model_max_length": arch.max_source_positions, "do_lower_case": False}


def generation_config(fairseq_defaults: dict) -> dict:
    """transformers' GenerationConfig keys (closest to fairseq) plus fairseq's own, which the native
    port reads. fairseq's stopping rule is transformers' early_stopping=True."""
    return {
        "num_beams": fairseq_defaults["beam"],
        "length_penalty": fairseq_defaults["lenpen"],
        "early_stopping": True,
        "max_length": fairseq_defaults["max_len_b"],
        "decoder_start_token_id": 2, "bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2,
        "forced_eos_token_id": 2,
        "fairseq": dict(fairseq_defaults),
    }


def readme(config: dict, provenance: dict) -> str:
    p = config["porting"]
    src, tgt = config["langs"]
    arch = p["architecture"]
    bleu = provenance.get("bleu")
    members = list(provenance["members"])
    lines = [
        "---", f"language:\n- {src}\n- {tgt}", "tags:\n- translation\n- fairseq\n- fsmt", "---", "",
        f"# {src}→{tgt} fairseq transformer, converted", "",
        f"Converted from fairseq by {provenance['converter']['name']} {provenance['converter']['version']}.", "",
        "## Architecture", "",
        f"- {arch['arch']}: {arch['encoder_layers']} encoder / {arch['decoder_layers']} decoder layers, "
        f"d={arch['embed_dim']}, ffn {arch['encoder_ffn_embed_dim']}/{arch['decoder_ffn_embed_dim']}, "
        f"heads {arch['encoder_attention_heads']}/{arch['decoder_attention_heads']}, activation {arch['activation_fn']}",
        f"- {'pre' if arch['encoder_normalize_before'] else 'post'}-norm encoder, "
        f"{'pre' if arch['decoder_normalize_before'] else 'post'}-norm decoder; "
        f"{'learned' if arch['encoder_learned_pos'] else 'sinusoidal'} positions; "
        f"embedding scale {'off' if arch['no_scale_embedding'] else 'sqrt(d)'}; "
        f"layernorm_embedding {'on' if arch['layernorm_embedding'] else 'off'}",
        f"- vocabularies: {config['src_vocab_size']} source / {config['tgt_vocab_size']} target symbols; "
        f"ties: {json.dumps(p['ties']) if p['ties'] else 'none'}",
        f"- dtype {p['dtype']}; ensemble members: {', '.join(members)}", "",
        "## Use", "",
        "Native port (no fairseq needed):", "", "```", f"porting translate --model THIS_DIR < input.{src}", "```", "",
    ]
    if p["transformers_compatible"]:
        lines += ["transformers:", "", "```python",
                  "from transformers import FSMTForConditionalGeneration, FSMTTokenizer",
                  "tok = FSMTTokenizer.from_pretrained(THIS_DIR)",
                  "model = FSMTForConditionalGeneration.from_pretrained(THIS_DIR)", "```", ""]
    else:
        lines += ["transformers' FSMT cannot run this model faithfully:", ""]
        lines += [f"- {why}" for why in p["transformers_incompatibilities"]] + [""]
    if bleu:
        lines += ["## Evaluation", "", f"BLEU {bleu}", ""]
    lines += ["## Provenance", "", "Source files (sha256):", ""]
    lines += [f"- `{path}`: `{digest}`" for path, digest in provenance["sources"].items()]
    lines += ["", "Every dropped key, with its reason, is listed in `provenance.json`.", ""]
    return "\n".join(lines)
