"""`python -m typedpipe`: the `typedpipe` command, as the console script runs it."""

import sys

from typedpipe.cli import launch

sys.exit(launch())
