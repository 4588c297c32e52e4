"""The README and the docs say what the code does: the example runs as printed, the headline
table is the file `make bench` writes, and every result file the docs cite is committed."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
RESULTS = REPO / "benchmarks" / "results"
DOCS = [
    README,
    REPO / "benchmarks" / "README.md",
    REPO / "deploy" / "README.md",
    *sorted((REPO / "docs").rglob("*.md")),
]


def _section(title: str) -> str:
    return README.read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_library_example_runs(capsys):
    (code,) = re.findall(r"```python\n(.*?)```", _section("The library in one example"), re.S)
    exec(compile(code, f"{README}:The library in one example", "exec"), {"__name__": "readme"})
    assert float(capsys.readouterr().out) >= 1.0  # the mean batch size it prints


def test_the_readme_is_read_in_an_afternoon():
    assert len(README.read_text().splitlines()) <= 250


def test_the_readme_keeps_the_two_commands_ci_runs():
    (block,) = re.findall(r"```bash\n(.*?)```", _section("Two commands"), re.S)
    assert [line.split("#")[0].strip() for line in block.splitlines()] == ["make demo", "make test"]
    assert "make test" in (REPO / ".ci" / "run").read_text()


def _without(args: list[str], *flags: str) -> list[str]:
    """``args`` less each of ``flags`` and its value."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        else:
            kept.append(arg)
    return kept


def test_the_headline_table_is_what_make_bench_runs():
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\nbench: ", 1)[1].split("\n\t", 1)[1].split("\n", 1)[0]
    bench = shlex.split(recipe.replace("$(PY)", "python"))
    headline = _section("Headline")
    (command,) = re.findall(r"```bash\n(.*?)\n```", headline, re.S)
    assert shlex.split(command) == bench, "the README's headline command is not `make bench`'s"
    (cited,) = set(re.findall(r"benchmarks/results/([\w.-]+\.json)", headline))
    recorded = shlex.split(json.loads((RESULTS / cited).read_text())["command"])
    # The run may name its own folder and label; everything else is make bench's command.
    assert _without(recorded, "--results-dir", "--tag") == _without(bench, "--tag")


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
