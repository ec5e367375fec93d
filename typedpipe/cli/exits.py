"""Exit codes (DESIGN.md) and the usage error that means exit 2."""

EXIT_OK = 0
EXIT_INVALID = 1  # the pipeline or data is invalid: diagnostics printed
EXIT_USAGE = 2  # no such file, bad flag
EXIT_NUMERIC = 3  # training stopped by the numeric guard
EXIT_BUG = 4  # a typedpipe bug: one line on stderr, the traceback in a crash log
EXIT_INTERRUPTED = 130  # Ctrl-C: the last checkpoint is kept


class UsageError(Exception):
    """A bad command line: exit 2."""
