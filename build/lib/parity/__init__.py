"""The original's side: running fairseq, recording what it does, comparing the port against it.

Only this package may import fairseq, and only inside functions, so that `porting --help`
and the native port work where fairseq is not installed.
"""
