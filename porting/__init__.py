"""The native side of the workbench: everything here runs without fairseq (and without transformers)."""

__version__ = "0.1.0"
