"""The activations the port runs: one table for Python and C.

Each member carries fairseq's name (the config's ``activation_fn``), the code porting/kernels/
skinny.c's ``enum activation`` gives it (must match the C enum; ``native.activation_supported``
asks the compiled library, and tests/test_fast_kernels.py fails if a member has no C case), and
torch's function (by name: the table is read without torch by porting/lean.py). Adding one is a
line here and a case in skinny.c's ``activate``.
"""
from __future__ import annotations

from enum import Enum


class Activation(Enum):
    RELU = ("relu", 0, "relu")
    GELU = ("gelu", 1, "gelu")      # fairseq's "gelu" is the exact (erf) one, as torch's default

    def __init__(self, fairseq_name: str, code: int, torch_name: str):
        self.fairseq_name, self.code, self.torch_name = fairseq_name, code, torch_name

    @property
    def fn(self):
        """torch.nn.functional's function."""
        import torch.nn.functional as F

        return getattr(F, self.torch_name)

    @classmethod
    def named(cls, name: str) -> "Activation":
        for member in cls:
            if member.fairseq_name == name:
                return member
        raise ValueError(f"activation_fn {name!r}: supported are {', '.join(names())}")


def names() -> tuple[str, ...]:
    return tuple(m.fairseq_name for m in Activation)
