"""Loading a converted directory into the native model, strictly: the file checked against the
declared layout (porting.model.layout, the converter's table too), every parameter filled from it
(ties resolved), nothing left over, derived tables checked against our own computation."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from porting.format import BART_MODELS, Arch, ConfigError, family, read_config, vocab_sizes
from porting.model import layout
from porting.model.transformer import Transformer

PREFIX = layout.PREFIX


class LoadError(ConfigError):
    pass


def _check_module_tree(model: Transformer, expected: dict[str, tuple[int, ...]]) -> None:
    """The native module tree must name and shape its parameters as the declared layout does:
    loading is the identity only then. A disagreement is a bug of this package, not of the input."""
    ours = {name: tuple(p.shape) for name, p in model.named_parameters()}
    if ours != expected:
        missing, extra = sorted(set(expected) - set(ours)), sorted(set(ours) - set(expected))
        shapes = sorted(k for k in set(ours) & set(expected) if ours[k] != expected[k])
        raise RuntimeError(f"porting.model.transformer disagrees with porting.model.layout: not built {missing}, "
                           f"not declared {extra}, other shapes {shapes}")


def _unfilled(arch: Arch, src_vocab: int, tgt_vocab: int, beamable: bool) -> Transformer:
    """The module tree with its parameters on the meta device: no memory and no random initialisation,
    loading assigns each its stored tensor. Its buffers, the sinusoidal tables, are computed on the CPU
    (porting.model.positions) as ever."""
    with torch.device("meta"):
        return Transformer(arch, src_vocab, tgt_vocab, beamable=beamable)


def table_tolerance(table: torch.Tensor) -> float:
    """How far two correct computations of a [P, C] sinusoidal table may part: the float32 angles
    reach P radians, where one unit in the last place is P * 2^-23, and sin and cos of them differ by
    that much between math libraries' argument reductions (fairseq computes its table with the
    machine's torch.sin, so its own table varies as much). Measured: a wmt19-size table (1026
    positions) written where MKL ran AVX-512 code, checked where MKL was held to AVX2, differed by
    up to 6.1e-5 (position 875); the bound is 8 such units (~1e-3 at 1026 positions), while a table
    of another formula differs by ~1."""
    return 8 * torch.finfo(torch.float32).eps * max(table.size(0), 1)


def _stored_problems(stored: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], ties: dict[str, str],
                     derived: dict[str, torch.Tensor], file: str) -> list[str]:
    problems = []
    for name, shape in expected.items():
        key = ties.get(PREFIX + name, PREFIX + name)
        if key not in stored:
            problems.append(f"{file}: missing {PREFIX + name}")
        elif tuple(stored[key].shape) != shape:
            problems.append(f"{file}: {key} has shape {tuple(stored[key].shape)}, the model needs {shape}")
        elif not stored[key].is_floating_point():
            # the same bytes relabelled as integers would load as numbers no weight ever held
            problems.append(f"{file}: {key} is {str(stored[key].dtype).removeprefix('torch.')}: weights are float "
                            "tensors (float32, float16, bfloat16)")
    used = {ties.get(PREFIX + n, PREFIX + n) for n in expected}
    for key in sorted(set(stored) - used):
        if key not in derived:
            problems.append(f"{file}: unexpected tensor {key}")
        elif stored[key].shape != derived[key].shape or not torch.allclose(stored[key].float(), derived[key],
                                                                               atol=table_tolerance(derived[key])):
            problems.append(f"{file}: derived {key} differs from fairseq's sinusoidal table")
    return problems


def load_member(model_dir: str | Path, file: str, config: dict | None = None, dtype=torch.float32) -> Transformer:
    model_dir = Path(model_dir)
    config = config or read_config(model_dir)
    p = config["porting"]
    arch = Arch.from_config(p["architecture"])
    src_vocab, tgt_vocab = vocab_sizes(config)
    expected = layout.expected_shapes(arch, src_vocab, tgt_vocab)
    model = _unfilled(arch, src_vocab, tgt_vocab, beamable=family(config) in BART_MODELS)
    _check_module_tree(model, expected)
    try:
        stored = load_file(str(model_dir / file), backend="pread")
    except (SafetensorError, OSError) as e:      # missing, truncated, a header that lies about its length
        raise LoadError(f"{model_dir / file}: not a readable safetensors file ({e})") from None
    derived = {k: v for k, v in layout.derived_tensors(arch).items() if k in p.get("derived", {})}
    problems = _stored_problems(stored, expected, p["ties"], derived, file)
    if problems:
        raise LoadError("\n".join(problems))
    state = {name: stored[p["ties"].get(PREFIX + name, PREFIX + name)] for name in expected}
    # every parameter was checked above; buffers are ours. assign: the parameters become the stored tensors
    # (tied names share one), so loading never holds the model twice (peak RSS: 2.35 -> 1.27 GB on a
    # wmt19-size model, whose file is 0.97 GB)
    model.load_state_dict(state, strict=False, assign=True)
    unfilled = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if unfilled:                                  # a bug of this package: the check above passed
        raise RuntimeError(f"tensors left unfilled by loading: {unfilled}")
    return model.to(dtype).eval()


def load_ensemble(model_dir: str | Path, dtype=torch.float32) -> tuple[dict, list[Transformer]]:
    config = read_config(model_dir)
    return config, [load_member(model_dir, f, config, dtype) for f in config["porting"]["ensemble"]]
