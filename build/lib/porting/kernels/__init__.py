"""The fast kernels: the decoder step and encoder on cheaper operations, the C sources and their build, int8."""
