"""The `typedpipe` command: check, summary, train, eval, predict, bench, init, doctor.

Exit codes: 0 ok; 1 the pipeline or data is invalid (diagnostics printed);
2 usage error (no such file, bad flag); 3 training stopped by the numeric guard;
4 a typedpipe bug (one line on stderr, the traceback in a crash log); 130 interrupted.
With `--json`, stdout carries one JSON object and nothing else.

Modules: `commands` (the table: a new command is a handler module and one entry
there), `main` (parse, runtime, exit codes), `arguments`, `render`, `progress`,
and one module per command family (`check`, `train`, `model`, `bench`, `init`,
`doctor`). The CLI renders; what it runs is library code.
"""

from typedpipe.cli.exits import EXIT_BUG as EXIT_BUG
from typedpipe.cli.exits import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from typedpipe.cli.exits import EXIT_INVALID as EXIT_INVALID
from typedpipe.cli.exits import EXIT_NUMERIC as EXIT_NUMERIC
from typedpipe.cli.exits import EXIT_OK as EXIT_OK
from typedpipe.cli.exits import EXIT_USAGE as EXIT_USAGE
from typedpipe.cli.exits import UsageError as UsageError
from typedpipe.cli.main import launch as launch
from typedpipe.cli.main import main as main
from typedpipe.cli.main import parser as parser
from typedpipe.cli.progress import PhaseBars as PhaseBars
from typedpipe.cli.progress import epoch_line as epoch_line
from typedpipe.cli.render import counted as counted
from typedpipe.cli.render import plain_diagnostics as plain_diagnostics
from typedpipe.cli.render import render_diagnostics as render_diagnostics
