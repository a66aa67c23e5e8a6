"""Our converted directories into CTranslate2 models (its spec API; no fairseq, no unpickling).

What the command line needs to build its parser lives here, free of heavy imports (``porting --help``
must not import torch)."""

# CTranslate2's weight types (the quantization names its spec API accepts)
QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32")
