"""`python -m typedpipe.cli`: the CLI in this process, as it is (no re-execution)."""

import sys

from typedpipe.cli.main import main

sys.exit(main())
