"""The systems the harness can put under test, opened by ``kind:DIR`` (the contract they keep:
parity/contract.py): our port (``native:DIR``, parity/native.py), a transformers model
(``transformers:DIR``) or a CTranslate2 model (``ctranslate2:DIR``, both parity/peers.py).
"""
from __future__ import annotations

from pathlib import Path

from parity.contract import UnusableSystem

KINDS = ("native", "transformers", "ctranslate2")


def parse(spec: str) -> tuple[str, Path]:
    """``kind:DIR`` (a bare path means native:DIR)."""
    kind, sep, where = spec.partition(":")
    if not sep or kind not in KINDS:
        return "native", Path(spec)
    if not where:
        raise UnusableSystem(f"{spec}: give the directory after {kind}:")
    return kind, Path(where)


def open_system(spec: str, kernels: str = "fast", langs: tuple[str, str] | None = None, dtype: str = "float32",
                quantize: str | None = None):
    """The system a ``--port`` names, opened (its files read and checked). langs: the direction
    (a multilingual model's is required; a bilingual model's is its own). dtype, quantize: how the
    native port runs (bfloat16; int8), dtype how a transformers model does (float16, bfloat16); a
    CTranslate2 model computes in the type it was written in (`porting convert ctranslate2 --quantization`)."""
    kind, where = parse(spec)
    if kind == "native":
        from parity.native import NativeSystem

        return NativeSystem(where, kernels, langs, dtype, quantize)
    from parity import peers

    if quantize not in (None, "none"):
        raise UnusableSystem(f"{spec}: --quantize applies to the native port; a {kind} model is quantized when "
                             "written (`porting convert ctranslate2 --quantization int8`)")
    if kind == "transformers":
        return peers.transformers_system(where, langs, dtype)
    if dtype != "float32":
        raise UnusableSystem(f"{spec}: a CTranslate2 model computes in the type it was written in: convert it with "
                             "`porting convert ctranslate2 --quantization ...` instead of --dtype")
    return peers.CTranslate2System(where, langs)
