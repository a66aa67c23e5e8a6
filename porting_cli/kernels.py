"""`porting kernels`: build the C kernels now (instead of on first use) and say which path a run
will take, and why."""
from __future__ import annotations

from pathlib import Path


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, help="also say which parts of this converted model's decoding run in C")


def _model_report(model_dir: Path) -> list[str]:
    from porting.format import ConfigError
    from porting.generation.ensemble import Ensemble
    from porting.lean import Unsupported, read_weights, why_not
    from porting.model.load import load_ensemble

    try:
        config, models = load_ensemble(model_dir)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    lean = why_not(model_dir, config)                    # why `porting translate` would not start without torch
    if lean is None:
        try:
            read_weights(model_dir, config)
        except Unsupported as e:
            lean = str(e)
    ensemble = Ensemble(models, "fast")
    decoder, encoder = ensemble.decoders[0], ensemble.encoders[0]
    activation = models[0].decoder.layers[0].activation.fairseq_name if models[0].decoder.layers else "-"
    fused = decoder.output_panels is not None and len(models) == 1
    searched = decoder.native_search is not None and len(models) == 1
    return [f"{model_dir}: {len(models)} member(s), activation {activation}",
            f"  encoder layers as one C call: {'yes' if encoder.layers_c is not None else 'no'}",
            f"  decoder layers as one C call a step: {'yes' if decoder.layers_c is not None else 'no'}",
            f"  output projection fused with the candidate choice: {'yes' if fused else 'no'}"
            + ("" if fused or len(models) == 1 else " (an ensemble averages probabilities on torch's path)"),
            f"  the search's loop as one C call: {'yes' if searched else 'no'}"
            + (" (with fairseq's stopping rule and no n-gram blocking)" if searched else
               " (an ensemble)" if len(models) > 1 else ""),
            "  `porting translate` starts without torch (porting/lean.py): "
            + ("yes" if lean is None else f"no ({lean}): torch's runtime")]


def run(args) -> int:
    import torch

    from porting.kernels import build, native

    lines = []
    if native.available():
        cc = build.compiler()
        lines += [f"C kernels: built ({build.library()})",
                  f"  compiler: {cc} ({build.compiler_version(cc)}); cache {build.cache_dir()} (private)",
                  f"  instruction set: {native.isa()} (the widest this CPU runs; {build.ISA_VARIABLE}=avx2 "
                  "holds them to AVX2; both builds give the same bits)",
                  f"  threads: {torch.get_num_threads()}, " + ("split between torch's OpenMP threads" if native.threaded()
                                                             else "one (torch is not on GNU OpenMP here)"),
                  "--kernels fast (default): the C kernels for every float32 product, attention, the encoder's "
                  "and the decoder's layers and the output step",
                  "--kernels portable: the same algorithms on torch's kernels alone"]
    else:
        lines += [f"C kernels: unavailable: {native.unavailable_reason()}",
                  "--kernels fast (default): runs on torch's kernels, as --kernels portable does (same hypotheses, slower)"]
    lines.append("--kernels exact: fairseq's own kernels, operation by operation (bitwise equal scores)")
    if args.model is not None:
        lines += _model_report(args.model)
    print("\n".join(lines))
    return 0
