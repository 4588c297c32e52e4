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


RESULTS = README.parent / "benchmarks" / "results"
DOCS = [README, README.parent / "benchmarks" / "README.md", README.parent / "deploy" / "README.md"]


def test_every_result_file_the_docs_cite_is_committed():
    cited = set()
    for doc in DOCS:
        cited |= set(
            re.findall(r"(?:archive/)?20\d\d-\d\d-\d\d-[\w.-]+?\.(?:json|png)", doc.read_text())
        )
    assert cited, "the docs cite no result file: the pattern is wrong"
    missing = sorted(name for name in cited if not (RESULTS / name).is_file())
    assert missing == []


def test_results_keep_fewer_than_25_files_outside_the_archive():
    current = [path for path in RESULTS.iterdir() if path.is_file()]
    assert len(current) < 25, sorted(path.name for path in current)
