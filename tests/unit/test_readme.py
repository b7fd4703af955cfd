"""The README's CLI reference is the real `--help` output of every command (regenerate on purpose with
`NEXTBEST_UPDATE_README=1 pytest tests/unit/test_readme.py`)."""

from __future__ import annotations

import argparse
import os
import re

import pytest

from nextbest.cli import build_parser
from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"


def cli_reference() -> str:
    """Markdown: the top-level help, then each command's help, as the terminal shows them."""
    parser = build_parser()
    sections = [("nextbest", parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                sections.append((f"nextbest {name}", sub))
                sections += _nested(f"nextbest {name}", sub)
    blocks = [f"#### `{title}`\n\n```text\n{sub.format_help().rstrip()}\n```" for title, sub in sections]
    return "\n\n".join(blocks)


def _nested(prefix: str, parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((f"{prefix} {name}", sub))
    return found


def test_readme_cli_reference_matches_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps help to the terminal width
    expected = cli_reference()
    text = README.read_text()
    pattern = re.compile(re.escape(START) + r"\n(.*?)" + re.escape(END), re.DOTALL)
    match = pattern.search(text)
    assert match, f"README.md has no {START} ... {END} section"
    if os.environ.get("NEXTBEST_UPDATE_README"):
        README.write_text(pattern.sub(lambda _: f"{START}\n{expected}\n{END}", text))
        return
    assert match.group(1) == expected + "\n", (
        "README CLI reference is stale: run NEXTBEST_UPDATE_README=1 pytest tests/unit/test_readme.py"
    )


def test_readme_shows_the_quickstart() -> None:
    text = README.read_text()
    assert "make demo" in text
    assert "make test" in text
