"""docs/flags.md is the server's parser, rendered: a flag added, removed or re-helped without
regenerating the page (``make flag-docs``) fails here."""

from __future__ import annotations

from pathlib import Path

from service.command_line import _parser
from service.tools.flag_docs import render

FLAGS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "flags.md"


def test_the_committed_page_is_the_parser_s_output():
    assert FLAGS_PAGE.read_text() == render(_parser()), (
        "docs/flags.md is stale: run `python -m service.tools.flag_docs > docs/flags.md`"
    )


def test_every_visible_flag_has_a_row():
    page = FLAGS_PAGE.read_text()
    for action in _parser()._actions:
        if action.help == "==SUPPRESS==" or not action.option_strings:
            continue
        assert f"`{action.option_strings[-1]}`" in page, action.option_strings
