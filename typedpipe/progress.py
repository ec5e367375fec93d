"""Progress of long host-side phases (decoding a folder, checking every file).

Library code wraps its loop in `track(items, "check files", total=n)`; nothing
is shown unless a caller, the CLI, installs a listener with `listening(fn)`.
The listener lives in a context variable, so importing or calling typedpipe as a
library prints nothing and changes nothing in the caller's process.
"""

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

# listener(phase, done, total): called at the start (done=0), every few items, and at the end.
Listener = Callable[[str, int, int | None], None]

_LISTENER: contextvars.ContextVar[Listener | None] = contextvars.ContextVar(
    "typedpipe_progress", default=None
)

T = TypeVar("T")


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send every `track`ed phase inside the block to `listener`."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def track(items: Iterable[T], phase: str, total: int | None = None, every: int = 64) -> Iterator[T]:
    """Yield `items`, telling the listener (if any) how many are done every `every` items."""
    listener = _LISTENER.get()
    if listener is None:
        yield from items
        return
    done = 0
    listener(phase, done, total)
    for item in items:
        yield item
        done += 1
        if done % every == 0:
            listener(phase, done, total)
    listener(phase, done, total if total is not None else done)
