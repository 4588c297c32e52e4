"""Writes docs/flags.md from the server's argument parser: ``python -m service.tools.flag_docs``.

The page is generated, never edited by hand, so it lists exactly the flags ``python -m service``
takes; tests/docs/test_flag_docs.py fails when the committed page differs from this output
(``make flag-docs`` rewrites it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.command_line import _parser

REPO_ROOT = Path(__file__).resolve().parents[2]

HEADER = """\
# Flags of `python -m service`

Generated from the server's argument parser (`service/command_line.py`) by
`python -m service.tools.flag_docs > docs/flags.md` (`make flag-docs`); a test fails when this
page and the parser differ, so edit the parser's help, not this page. `python -m service --help`
prints the same. The load tester's and the benchmarks' flags: `--help` of each, and
[benchmarks/README.md](../benchmarks/README.md).
"""


def _default(action: argparse.Action) -> str:
    """The default as the page shows it: paths relative to the repository, so the page is the
    same in every checkout."""
    default = action.default
    if default is argparse.SUPPRESS or default is None:
        return "see meaning" if default is argparse.SUPPRESS else "-"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "off" if default is False else "on"
    if isinstance(default, Path) and default.is_absolute():
        default = default.relative_to(REPO_ROOT)
    return f"`{default}`"


def _flag(action: argparse.Action) -> str:
    names = ", ".join(f"`{name}`" for name in action.option_strings)
    if action.choices:
        names += f" {{{','.join(map(str, action.choices))}}}"
    elif action.metavar:
        names += f" {action.metavar}"
    return names.replace("|", "\\|")


def _meaning(action: argparse.Action) -> str:
    return " ".join((action.help or "").split()).replace("|", "\\|")


def render(parser: argparse.ArgumentParser) -> str:
    """The page for ``parser``: one table per argument group, in the parser's order."""
    lines = [HEADER]
    for group in parser._action_groups:
        actions = [
            action
            for action in group._group_actions
            if action.help is not argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)
        ]
        if not actions:
            continue
        title = "general" if group.title in ("options", "optional arguments") else group.title
        lines += [f"## {title}", "", "| flag | default | meaning |", "|---|---|---|"]
        lines += [f"| {_flag(a)} | {_default(a)} | {_meaning(a)} |" for a in actions]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    sys.stdout.write(render(_parser()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
