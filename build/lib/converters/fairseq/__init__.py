"""fairseq checkpoints, dictionaries and BPE codes -> a converted model directory."""
