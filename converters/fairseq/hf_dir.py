"""What reading any transformers directory back shares (converters/fairseq/fsmt.py, m2m100.py): the
files checked, the weights read safely, the job begun, the architecture read, and fairseq's generation
settings mapped back from generation_config.json."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from converters.fairseq import card as model_card
from converters.fairseq.arch import Architecture, UnsupportedArchitecture, read_architecture
from converters.fairseq.job import ConversionError, Job, Member
from converters.io.atomic import check_writable
from converters.io.checkpoint import CheckpointError, load_untrusted, not_weights
from porting.generation.options import fairseq_defaults

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def read_weights(hf_dir: Path, problems: list[str]) -> tuple[Path, dict[str, torch.Tensor]] | None:
    """The weights, read safely (safetensors, or a pickle through the allowlisted loader)."""
    for name in WEIGHT_FILES:
        path = hf_dir / name
        if not path.is_file():
            continue
        try:
            state = load_file(str(path)) if name.endswith(".safetensors") else load_untrusted(path)
        except (SafetensorError, CheckpointError, OSError) as e:
            problems.append(f"{path}: not readable ({e})")
            return None
        if problem := not_weights(state, prefix=""):
            problems.append(f"{path}: {problem}")
            return None
        return path, state
    problems.append(f"{hf_dir}: no {' or '.join(WEIGHT_FILES)}")
    return None


def begin(hf_dir: Path, out: Path, config: dict, files: tuple[str, ...], kind: str, force: bool,
          license: str | None, langs: tuple[str | None, str | None] = (None, None)) -> tuple[Job, tuple | None]:
    """The job for a `kind` directory (its files all there, or one error), with the weights as read
    (None: a problem is recorded)."""
    missing = [f for f in files if not (hf_dir / f).is_file()]
    if missing:
        raise ConversionError([f"--model {hf_dir}: not a transformers {kind} directory (missing {', '.join(missing)})"])
    problems: list[str] = []
    if problem := check_writable(Path(out), force, [hf_dir]):
        problems.append(problem)
    weights = read_weights(hf_dir, problems)
    job = Job([weights[0] if weights else hf_dir / WEIGHT_FILES[0]], hf_dir, Path(out), *langs,
              config.get("dtype") or config.get("torch_dtype") or "float32", force, license,
              origin=f"a transformers {kind} directory", data_files=[hf_dir / f for f in files], problems=problems)
    if job.dtype not in ("float32", "float16", "bfloat16"):
        job.dtype = "float32"
    return job, weights


# the config fields transformer_options reads, each a whole number of at least 1
SIZE_FIELDS = ("d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim", "decoder_ffn_dim",
               "encoder_attention_heads", "decoder_attention_heads", "max_position_embeddings")


def config_problems(config: dict, label: str, sizes: tuple[str, ...] = SIZE_FIELDS) -> list[str]:
    """What a transformers config.json lacks, or holds in the wrong type, of the fields the readers use."""
    out = []
    for name in sizes:
        value = config.get(name)
        if value is None:
            out.append(f"{label}: no {name}")
        elif type(value) is not int or value < 1:
            out.append(f"{label}: {name} is {value!r}, not a whole number of at least 1")
    for name in ("dropout", "attention_dropout", "activation_dropout"):
        if name in config and (type(config[name]) not in (int, float) or not 0 <= config[name] <= 1):
            out.append(f"{label}: {name} is {config[name]!r}, not a probability")
    for name in ("activation_function", "dtype", "torch_dtype"):
        if config.get(name) is not None and not isinstance(config[name], str):
            out.append(f"{label}: {name} is {config[name]!r}, not a name")
    for name in ("scale_embedding", "tie_word_embeddings"):
        if name in config and not isinstance(config[name], bool):
            out.append(f"{label}: {name} is {config[name]!r}, not true or false")
    return out


def transformer_options(config: dict) -> dict:
    """The fields FSMTConfig and M2M100Config share, as fairseq's transformer options; each reader adds
    what its class fixes (normalisation, ties)."""
    d = config["d_model"]
    return {
        "arch": "transformer", "encoder_layers": config["encoder_layers"], "decoder_layers": config["decoder_layers"],
        "encoder_embed_dim": d, "decoder_embed_dim": d,
        "encoder_ffn_embed_dim": config["encoder_ffn_dim"], "decoder_ffn_embed_dim": config["decoder_ffn_dim"],
        "encoder_attention_heads": config["encoder_attention_heads"],
        "decoder_attention_heads": config["decoder_attention_heads"],
        "activation_fn": config.get("activation_function", "relu"),
        "max_source_positions": config["max_position_embeddings"],
        "max_target_positions": config["max_position_embeddings"],
        "no_scale_embedding": not config.get("scale_embedding", True),
        "dropout": config.get("dropout", 0.1), "attention_dropout": config.get("attention_dropout", 0.0),
        "activation_dropout": config.get("activation_dropout", 0.0),
    }


def architecture(hf_dir: Path, options: dict) -> Architecture:
    try:
        return read_architecture(options)
    except UnsupportedArchitecture as e:
        raise ConversionError([f"{hf_dir}: {p}" for p in e.problems]) from None


def read_generation(job: Job, member: Member, hf_dir: Path) -> None:
    """fairseq's options from generation_config.json where there is one (else fairseq's defaults stay)."""
    generation = hf_dir / "generation_config.json"
    if not generation.is_file():
        return
    job.data_files.append(generation)
    try:
        settings = json.loads(generation.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        job.problems.append(f"{generation}: not readable JSON ({e})")
        return
    if not isinstance(settings, dict):
        job.problems.append(f"{generation}: not a JSON object")
        return
    job.generation, notes, problems = model_card.fairseq_generation(settings, fairseq_defaults())
    job.problems += [f"{generation}: {p}" for p in problems]
    member.upgrades += [("generation_config.json", note) for note in notes]
