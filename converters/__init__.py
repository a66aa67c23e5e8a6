"""Converters: original checkpoints + dictionaries + BPE codes -> safetensors + vocab + config.

Nothing here imports fairseq: checkpoints are read as untrusted data.
"""

__version__ = "0.1.0"

# the install that brings the peers (transformers, CTranslate2): said wherever one is missing
PEERS_HINT = "pip install 'porting-workbench[peers]'"
