"""`python -m typedpipe`: the `typedpipe` command."""

import sys

from typedpipe.launch import main

sys.exit(main())
