"""The README's library example runs as printed, so the documentation cannot drift from the API."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_use_the_library_example_runs(capsys):
    section = README.read_text().split("## Use the library", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    exec(compile(code, f"{README}:Use the library", "exec"), {"__name__": "readme_example"})
    assert float(capsys.readouterr().out) >= 1.0  # the mean batch size it prints
