"""Converters: original checkpoints + dictionaries + BPE codes -> safetensors + vocab + config.

Nothing here imports fairseq: checkpoints are read as untrusted data.
"""
