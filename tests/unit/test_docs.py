"""The documentation: `docs/cli.md` is the real `--help` output of every command (regenerate it on purpose
with `NEXTBEST_UPDATE_DOCS=1 pytest tests/unit/test_docs.py`), every file a help text or the README names
exists, and the README shows only examples that a test or CI runs. `make docs` (part of `make test`)
builds the site with `mkdocs build --strict`, which fails on a broken link between pages."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator

import pytest

from nextbest.cli import build_parser
from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
CLI_PAGE = REPO_ROOT / "docs" / "cli.md"
START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"
# The README's shell examples and what runs each: the quickstart is CI's own script (.ci/run runs
# `make test` and `make demo`); the demo's next steps are run by tests/integration/test_readme_examples.py.
QUICKSTART = ("make demo", "make test")


def readme_commands(block: str) -> list[str]:
    """The README's `block` (between `<!-- block:start -->` and `<!-- block:end -->`), one shell command
    a string (indented lines continue a command)."""
    pattern = re.compile(rf"<!-- {block}:start -->\n```bash\n(.*?)```\n<!-- {block}:end -->", re.DOTALL)
    found = pattern.search(README.read_text())
    assert found, f"README.md has no {block} block"
    commands: list[str] = []
    for line in found.group(1).splitlines():
        if line.startswith((" ", "\t")):
            commands[-1] += "\n" + line
        else:
            commands.append(line)
    return commands


def demo_next_commands() -> list[str]:
    """The README's demo-next block: the commands `make demo` prints at its end."""
    return readme_commands("demo-next")


def cli_reference() -> str:
    """Markdown: the top-level help, then each command's help, as the terminal shows them."""
    blocks = [
        f"## `{title}`\n\n```text\n{parser.format_help().rstrip()}\n```" for title, parser in _commands()
    ]
    return "\n\n".join(blocks)


def _commands(
    title: str = "nextbest", parser: argparse.ArgumentParser | None = None
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command's title and parser, depth first."""
    parser = parser or build_parser()
    yield title, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(f"{title} {name}", sub)


def test_the_cli_reference_matches_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps help to the terminal width
    expected = cli_reference()
    text = CLI_PAGE.read_text()
    pattern = re.compile(re.escape(START) + r"\n(.*?)" + re.escape(END), re.DOTALL)
    match = pattern.search(text)
    assert match, f"{CLI_PAGE} has no {START} ... {END} section"
    if os.environ.get("NEXTBEST_UPDATE_DOCS"):
        CLI_PAGE.write_text(pattern.sub(lambda _: f"{START}\n{expected}\n{END}", text))
        return
    assert match.group(1) == expected + "\n", (
        "docs/cli.md is stale: run NEXTBEST_UPDATE_DOCS=1 pytest tests/unit/test_docs.py"
    )


def test_every_repository_file_a_help_text_names_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    named = set(re.findall(r"\b(?:configs|serving|benchmarks)/[\w/.-]*\w", cli_reference()))
    assert named, "expected the help texts to name a config"
    assert sorted(path for path in named if not (REPO_ROOT / path).exists()) == []


def test_the_readme_shows_the_quickstart_and_only_tested_examples() -> None:
    text = README.read_text()
    blocks = re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", text, re.DOTALL)
    # Run by tests/integration/test_readme_examples.py.
    tested = {"\n".join(readme_commands(block)) + "\n" for block in ("demo-next", "store", "loop", "cron")}
    quickstart = [b for b in blocks if b not in tested]
    assert len(quickstart) == 1, "a README example that no test runs: mark it as a tested block or move it"
    assert [line.split("#")[0].strip() for line in quickstart[0].splitlines()] == list(QUICKSTART)
    assert [command.split()[:3] for command in demo_next_commands()] == [
        [".venv/bin/nextbest", "serve"],
        ["curl", "-s", "http://127.0.0.1:3000/rank"],
        [".venv/bin/nextbest", "journeys", "--events"],
    ]


def test_every_link_in_the_readme_resolves() -> None:
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert local, "the README should point to the docs"
    assert sorted(link for link in local if not (REPO_ROOT / link).exists()) == []
