"""The fast kernels: the decoder step and encoder on cheaper operations, the C sources and their build, int8."""

# The int8 modes the commands' --quantize offers (what each quantizes: porting/kernels/quantize.py);
# declared here, free of torch, so that the command line's parsers need not import it.
QUANTIZE_MODES = ("int8", "int8-all")
