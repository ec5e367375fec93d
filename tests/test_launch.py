"""The console script re-executes a stepping command once, with glibc's malloc on huge pages."""

import os
import subprocess
import sys
import textwrap

import pytest

from typedpipe import runtime as launch


@pytest.fixture
def huge_pages_possible(monkeypatch, tmp_path):
    """A Linux glibc 2.36 machine with transparent huge pages on madvise."""
    mode = tmp_path / "enabled"
    mode.write_text("always [madvise] never\n")
    monkeypatch.setattr(launch, "_THP_MODE", mode)
    monkeypatch.setattr(launch.sys, "platform", "linux")
    monkeypatch.setattr(launch.os, "confstr", lambda name: "glibc 2.36")
    return mode


def test_the_tunable_is_added_to_the_environment(huge_pages_possible):
    environ = launch.huge_page_environment({"PATH": "/bin"})
    assert environ == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def test_other_tunables_are_kept(huge_pages_possible):
    environ = launch.huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert environ["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


@pytest.mark.parametrize("tunables", ["glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=1"])
def test_a_setting_already_made_is_left_alone(huge_pages_possible, tunables):
    """Also the opt-out, and what stops a second re-execution."""
    assert launch.huge_page_environment({"GLIBC_TUNABLES": tunables}) is None


def test_nothing_changes_where_huge_pages_cannot_help(huge_pages_possible, monkeypatch):
    huge_pages_possible.write_text("always madvise [never]\n")
    assert launch.huge_page_environment({}) is None
    huge_pages_possible.write_text("[always] madvise never\n")
    assert launch.huge_page_environment({}) is not None
    monkeypatch.setattr(launch.os, "confstr", lambda name: "glibc 2.34")  # before the tunable
    assert launch.huge_page_environment({}) is None
    monkeypatch.setattr(launch.os, "confstr", lambda name: "musl 1.2")
    assert launch.huge_page_environment({}) is None
    monkeypatch.setattr(launch.sys, "platform", "darwin")
    assert launch.huge_page_environment({}) is None


@pytest.mark.skipif(
    launch.huge_page_environment({}) is None, reason="no glibc huge-page tunable here"
)
def test_a_stepping_command_reexecutes_once_and_a_cheap_one_never(tmp_path):
    """The process prints its tunables, then runs `typedpipe <command>` on a run folder
    that does not exist: exit 2 either way, after one re-execution for `eval` only."""
    script = textwrap.dedent(
        """
        import os, sys
        print("tunables:", os.environ.get("GLIBC_TUNABLES"), flush=True)
        sys.argv = ["typedpipe", *sys.argv[1:]]
        from typedpipe.cli import launch
        sys.exit(launch())
        """
    )
    environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    for command, lines in (
        ("eval", ["tunables: None", "tunables: glibc.malloc.hugetlb=1"]),
        ("doctor", ["tunables: None"]),
    ):
        args = [sys.executable, "-c", script, command]
        args += [str(tmp_path / "no-run")] if command == "eval" else ["--json"]
        done = subprocess.run(args, capture_output=True, text=True, env=environ, check=False)
        printed = [line for line in done.stdout.splitlines() if line.startswith("tunables:")]
        assert printed == lines, done.stderr
