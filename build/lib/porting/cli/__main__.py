"""`python -m porting.cli`: the `porting` command."""
import sys

from porting.cli import main

sys.exit(main())
