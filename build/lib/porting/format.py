"""The on-disk contract between the converters and the native runtime, declared once.

A converted directory's ``config.json`` carries a ``porting`` section: the architecture (``Arch``),
the special ids, the format version, the ties and the ensemble members. The converters write it
from the names here; the runtime reads it back only through ``read_config``, which checks the
format version and the special ids, so a directory this runtime cannot run is refused by name
instead of running wrong.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

# Raised whenever what a converted directory holds changes meaning; read_config refuses newer ones.
FORMAT_VERSION = 1

# The safetensors metadata keys every file we write carries (``convert fairseq`` and ``convert torch``):
# a tied tensor is stored once under its canonical name, and TIES_METADATA maps alias -> canonical.
TIES_METADATA = "porting.ties"
VERSION_METADATA = "porting.format_version"

# fairseq's Dictionary() puts these four first, in this order, before the file's entries.
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


@dataclass(frozen=True)
class SpecialIds:
    bos: int = 0
    pad: int = 1
    eos: int = 2
    unk: int = 3

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


# The ids the port runs with. fairseq's own models always have them (the Dictionary constructor
# adds the specials first); the model's position numbering (from pad + 1) and the search's
# rules depend on them, so a directory with other ids is refused rather than remapped.
SPECIAL_IDS = SpecialIds()
BOS, PAD, EOS, UNK = SPECIAL_IDS.bos, SPECIAL_IDS.pad, SPECIAL_IDS.eos, SPECIAL_IDS.unk


# The longest position table the port builds (fairseq builds it too, at model construction):
# 65536 positions x 1024 dims is 256 MiB; a checkpoint asking for 10**12 would ask for terabytes.
MAX_POSITIONS = 1 << 16


class ConfigError(Exception):
    """A directory that is not a converted model this runtime can run."""


@dataclass(frozen=True)
class Arch:
    """The architecture section of a converted config.json (``porting.architecture``): every option
    that changes the math, named as fairseq names it."""
    encoder_layers: int
    decoder_layers: int
    embed_dim: int
    encoder_ffn_embed_dim: int
    decoder_ffn_embed_dim: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    encoder_normalize_before: bool
    decoder_normalize_before: bool
    encoder_learned_pos: bool
    decoder_learned_pos: bool
    layernorm_embedding: bool
    no_scale_embedding: bool
    activation_fn: str
    max_source_positions: int
    max_target_positions: int
    decoder_final_norm: bool

    @classmethod
    def from_config(cls, arch: dict) -> "Arch":
        missing = [k for k in cls.__dataclass_fields__ if k not in arch]
        if missing:
            raise ConfigError(f"the architecture lacks {', '.join(missing)}")
        made = cls(**{k: arch[k] for k in cls.__dataclass_fields__})
        if problems := made.problems():
            raise ConfigError("the architecture is not one the port can run: " + "; ".join(problems))
        return made

    def problems(self) -> list[str]:
        """Every field of the wrong type or out of range, named (the converter and the loader ask)."""
        out, typed = [], set()
        for name, kind in Arch.__annotations__.items():
            value = getattr(self, name)
            expected = {"int": int, "bool": bool, "str": str}[kind]
            if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
                typed.add(name)
            else:
                out.append(f"{name} {value!r}: not {'an' if kind == 'int' else 'a'} {kind}")

        def check(names: tuple[str, ...], ok, why: str) -> None:
            if set(names) <= typed and not ok(*(getattr(self, n) for n in names)):
                out.append(f"{names[0]} {getattr(self, names[0])}: {why}")
        for name in ("encoder_layers", "decoder_layers", "embed_dim", "encoder_ffn_embed_dim", "decoder_ffn_embed_dim"):
            check((name,), lambda v: v >= 1, "at least 1")
        for side in ("encoder", "decoder"):
            check((f"{side}_attention_heads", "embed_dim"), lambda heads, dim: heads >= 1 and dim % heads == 0,
                  f"must be at least 1 and divide embed_dim {self.embed_dim}")
        for name in ("max_source_positions", "max_target_positions"):
            check((name,), lambda v: 1 <= v <= MAX_POSITIONS,
                  f"between 1 and {MAX_POSITIONS} (a position table this long is built when the model is)")
        return out


def read_config(model_dir: str | Path) -> dict:
    """config.json of a converted directory, checked against this contract."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{model_dir}: no config.json (is this a converted model directory?)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise ConfigError(f"{path}: not readable JSON ({e})") from None
    section = config.get("porting") if isinstance(config, dict) else None
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: no `porting` section: convert with `porting convert fairseq`")
    version = section.get("format_version")
    if not isinstance(version, int):
        raise ConfigError(f"{path}: no format_version in its `porting` section")
    if version > FORMAT_VERSION:
        raise ConfigError(f"{path}: written in format version {version}; this workbench reads up to "
                          f"{FORMAT_VERSION}: upgrade porting-workbench, or convert again with this one")
    ids = section.get("special_ids")
    if ids != SPECIAL_IDS.to_dict():
        raise ConfigError(f"{path}: special ids {ids}; the port runs fairseq's {SPECIAL_IDS.to_dict()}")
    return config
