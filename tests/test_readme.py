"""README.md's code blocks run, so they cannot rot.

The conventions, by fence:

- ```python: every block runs, in file order, in one namespace (a later block may use
  what an earlier one defined), in a fresh Python, in a scratch folder holding
  `examples/`. A statement whose line ends with a comment naming a typedpipe error
  and a code, such as `# ContractError [shape.channels] in model`, must raise exactly
  that error with that code; the blocks go on after it.
- ```console: each `$ command` runs with bash in the same scratch folder; the lines
  after it, up to the next `$`, are its stdout, exactly (a line `...` stands for any
  lines). A command of which nothing is shown may print anything.
- ```toml: a block with a `[model]` table is a whole config and passes `check`;
  others are valid TOML.
- ```sh: instructions (make targets, several processes), not run; every `typedpipe`
  command in them is parsed by the real argument parser.
- a block with no language that lists `typedpipe <command> ...` lines is the synopsis:
  every command of the parser is there, with only flags it has.
"""

import ast
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import typedpipe as tp
from typedpipe.cli import parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# `# ContractError [shape.channels] ...` at the end of a statement's last line.
RAISES = re.compile(r"#\s*(?P<error>\w+(?:Error|Stopped))\s*\[(?P<code>[a-z_]+\.[a-z_]+)\]")


def blocks(language: str) -> list[tuple[int, str]]:
    """Each fenced block of `language` in README.md: (the line it starts on, its text)."""
    found, lines = [], README.read_text().splitlines()
    inside, start, body = None, 0, []
    for number, line in enumerate(lines, 1):
        fence = re.fullmatch(r"```(\w*)\s*", line)
        if fence and inside is None:
            inside, start, body = fence.group(1), number + 1, []
        elif line.strip() == "```" and inside is not None:
            if inside == language:
                found.append((start, "\n".join(body) + "\n"))
            inside = None
        elif inside is not None:
            body.append(line)
    return found


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A folder like a checkout's root for the README's relative paths; runs/ lands here."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "examples").symlink_to(ROOT / "examples")
    return folder


def run_python_blocks() -> None:
    """Every python block, statement by statement, in one namespace (see the docstring)."""
    namespace: dict = {"__name__": "readme"}
    expected_failures = 0
    for start, text in blocks("python"):
        tree = ast.parse(text, filename=f"README.md:{start}")
        lines = text.splitlines()
        for statement in tree.body:
            where = f"README.md:{start + statement.lineno - 1}"
            code = compile(ast.Module([statement], []), where, "exec")
            marker = RAISES.search(lines[(statement.end_lineno or statement.lineno) - 1])
            if marker is None:
                exec(code, namespace)
                continue
            expected_failures += 1
            with pytest.raises(getattr(tp, marker["error"])) as caught:
                exec(code, namespace)
            raised = caught.value.diagnostic.code
            assert raised == marker["code"], f"{where}: [{raised}], not [{marker['code']}]"
    assert expected_failures >= 1  # the marker convention is in use, so this test sees it


@pytest.fixture(scope="module")
def python_blocks(scratch):
    """Every python block run once, in order, in the scratch folder: the console blocks use
    what they wrote (the fine-tuning section's photos and weights file)."""
    # In a fresh Python with JAX's defaults, as a reader runs them: not with this
    # suite's strict promotion and four fake devices.
    script = f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); "
    script += "import test_readme; test_readme.run_python_blocks()"
    environment = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=scratch,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


# One worker runs both (`pytest -n auto --dist loadgroup`), so the blocks run once.
@pytest.mark.xdist_group("readme")
def test_every_python_block_runs_in_order(python_blocks):
    assert python_blocks.returncode == 0, python_blocks.stdout + python_blocks.stderr


def _matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line; a `...` line in `expected` stands for any lines."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(_matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and expected[0] == actual[0] and _matches(expected[1:], actual[1:])


@pytest.mark.xdist_group("readme")
def test_every_console_block_prints_what_it_shows(scratch, python_blocks):
    sessions = blocks("console")
    assert sessions
    venv = str(Path(sys.executable).parent)  # the `typedpipe` installed with this Python
    environment = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    environment["PATH"] = f"{venv}{os.pathsep}{environment['PATH']}"
    for start, text in sessions:
        commands: list[tuple[str, list[str]]] = []
        for line in text.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            else:
                commands[-1][1].append(line.rstrip())
        for command, shown in commands:
            run = subprocess.run(
                ["bash", "-c", command],
                cwd=scratch,
                env=environment,
                capture_output=True,
                text=True,
                timeout=300,
            )
            printed = [line.rstrip() for line in run.stdout.splitlines()]
            if shown:
                assert _matches(shown, printed), (
                    f"README.md:{start}: $ {command}\n" + "\n".join(printed) + run.stderr
                )


def test_every_config_block_is_valid_and_a_whole_one_passes_check(scratch, monkeypatch):
    monkeypatch.chdir(scratch)
    configs = blocks("toml")
    assert configs
    for start, text in configs:
        tomllib.loads(text)
        if "[model]" in text:
            diagnostics = tp.check_pipeline(tp.parse_config(text))
            assert not diagnostics, f"README.md:{start}: {diagnostics}"


def _typedpipe_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("typedpipe ")]


def test_every_shell_command_parses():
    commands = [c for _, text in blocks("sh") for c in _typedpipe_lines(text)]
    assert commands
    for command in commands:
        words = shlex.split(command.split("#")[0].removesuffix("&"))
        parser().parse_args(words[1:])  # exits 2 (a failed test) on a flag that does not exist


def test_the_synopsis_lists_every_command_with_flags_it_has():
    root = parser()
    (subparsers,) = [a for a in root._actions if a.dest == "command"]
    commands = {**subparsers.choices, "--version": root}
    synopsis = {
        line.split()[1]: line.split("#")[0]
        for _, text in blocks("")
        for line in _typedpipe_lines(text)
        if line.split()[1] in commands
    }
    assert set(synopsis) == set(commands)
    for name, line in synopsis.items():
        known = {flag for action in commands[name]._actions for flag in action.option_strings}
        flags = set(re.findall(r"--[a-z][a-z-]*", line))
        assert flags <= known, f"typedpipe {name}: {flags - known} in README, not in the parser"
