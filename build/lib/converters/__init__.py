"""Converters: original checkpoints + dictionaries + BPE codes -> safetensors + vocab + config.

Nothing here imports fairseq: checkpoints are read as untrusted data.
"""

__version__ = "0.1.0"
