"""The machine conditions a recorded run depends on, and how to reproduce them.

fairseq's floats depend on the thread count and on the instruction set that torch's, MKL's and
oneDNN's kernels dispatch to: each sums in another order on another instruction set. The shipped
runs were recorded with 1 thread on an AVX2 CPU; replayed on an AVX512 CPU, fairseq itself no
longer reproduces them bitwise (its teacher-forced tensors differ from the recording from
encoder.layers.0 on), and with the port's exact kernels one beam-5 hypothesis of 500 changes.
These environment variables make all three dispatch as on the recording machine. Each library
reads them when it starts, so they must be set before torch is imported (tests/conftest.py does,
and `make parity` passes them); a replay on other conditions says so in its report.
"""
from __future__ import annotations

import os

# torch.backends.cpu.get_cpu_capability()'s name -> the variables that make the three libraries use it
ISA_ENV = {
    "AVX2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "AVX512": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
}


def recorded_capability(manifest: dict) -> str | None:
    return manifest.get("versions", {}).get("cpu_capability")


def reproduce(manifest: dict) -> dict[str, str]:
    """Set (where not set already) the variables that dispatch as the recording did; returns them.
    Call before torch is imported."""
    env = ISA_ENV.get(recorded_capability(manifest) or "", {})
    for key, value in env.items():
        os.environ.setdefault(key, value)
    return env


def conditions(manifest: dict) -> dict:
    """The replay's conditions beside the recording's, for the report (torch must be importable)."""
    import torch

    recorded, here = recorded_capability(manifest), torch.backends.cpu.get_cpu_capability()
    out = {"recorded_threads": manifest.get("threads"), "threads": torch.get_num_threads(),
           "recorded_cpu_capability": recorded, "cpu_capability": here}
    if recorded and recorded != here:
        env = " ".join(f"{k}={v}" for k, v in ISA_ENV.get(recorded, {}).items())
        out["note"] = (f"recorded on {recorded}, replayed on {here}: the last bits of fairseq's own floats differ; "
                       f"set {env} before starting to replay bitwise")
    return out
