"""The native side of the workbench: everything here runs without fairseq (and without transformers).

    from porting import Translator
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``porting.Translator`` without importing torch for ``import porting`` alone (the command's help)."""
    if name == "Translator":
        from porting.translator import Translator

        return Translator
    raise AttributeError(f"module 'porting' has no attribute {name!r}")
