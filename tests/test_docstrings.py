"""Every docstring example of the installed package runs, so none can rot.

One test per module of `typedpipe` (found by `pkgutil.walk_packages`, so a new module is
covered the day it is added): it imports the module and runs each of its examples with
`doctest`, under the strict promotion of `conftest.py`. A failure names the module and
prints doctest's report (the example, what was expected, what came). A module with no
example still has to import. Examples may register names (that is how `register_stage`
is shown); the registries are put back as they were after each module.
"""

import doctest
import importlib
import pkgutil
import sys

import pytest

import typedpipe
from typedpipe.registry import Registry


def is_program(name: str) -> bool:
    """A `__main__` (`python -m typedpipe`) runs its command when imported: not a library."""
    return name.rpartition(".")[2] == "__main__"


# Known broken, each in a module the seams work (issue 22) is moving, which the brief of
# this test may not edit. Remove an entry when its module lands: the xfail is strict, so
# an example that passes again fails here until it is taken off this list.
KNOWN_BROKEN: dict[str, str] = {}


def module_names() -> list[str]:
    found = pkgutil.walk_packages(typedpipe.__path__, "typedpipe.")
    return ["typedpipe", *sorted(m.name for m in found if not is_program(m.name))]


MODULES = module_names()


def registries() -> list[Registry]:
    """Every registry some loaded typedpipe module holds, once each."""
    found: dict[int, Registry] = {}
    for name, module in list(sys.modules.items()):
        if name == "typedpipe" or name.startswith("typedpipe."):
            for value in list(vars(module).values()):
                if isinstance(value, Registry):
                    found[id(value)] = value
    return list(found.values())


@pytest.fixture
def registries_restored():
    """Forget what the examples register (`register_stage`'s registers `invert`)."""
    importlib.import_module("typedpipe.models")
    importlib.import_module("typedpipe.pipeline.stages")
    importlib.import_module("typedpipe.pipeline.sources")
    before = [(registry, dict(registry._entries)) for registry in registries()]
    yield
    for registry, entries in before:
        registry._entries.clear()
        registry._entries.update(entries)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(reason=KNOWN_BROKEN[name], strict=True),
        )
        if name in KNOWN_BROKEN
        else name
        for name in MODULES
    ],
)
def test_examples_run(name, registries_restored):
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append, clear_globs=True)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{name}: {results.failed} example(s) failed\n" + "".join(report)


def test_the_walk_finds_the_modules_that_hold_examples():
    # A walk that found nothing would pass every test above.
    for name in ("typedpipe.registry", "typedpipe.pipeline.stages.base", "typedpipe.models.zoo"):
        assert name in MODULES
    assert len(MODULES) > 50


def test_every_known_broken_module_exists():
    # A module renamed by its move leaves a stale entry: its examples run under the new name.
    assert set(KNOWN_BROKEN) <= set(MODULES)
