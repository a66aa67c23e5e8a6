"""`python -m porting_cli`: the `porting` command."""
import sys

from porting_cli import main

sys.exit(main())
