"""Every ``--flag`` the docs name is one the command beside it takes (a doc once told users to
pass ``--results-dir`` to benchmarks that take ``--json-dir``).

A line naming ``python -m MODULE`` (or ``deploy/render_haproxy.py``) is checked against that
module's parser (several modules: against all of theirs); a line naming none, against every
parser's flags. The parsers are
captured by running each module's ``main``/``parse_args`` with ``ArgumentParser.parse_args``
replaced, so nothing runs."""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
from pathlib import Path
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [
    REPO / "README.md",
    REPO / "benchmarks" / "README.md",
    REPO / "deploy" / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
]
#: ``python -m X``: where X's parser is built (module, function called with an argv list).
ENTRY_POINTS = {
    "service": ("service.command_line", "parse_args"),
    "clients.client_qps": ("clients.client_qps", "_parse_args"),
    "clients.client": ("clients.client", "main"),
    "benchmarks.compare": ("benchmarks.compare", "parse_args"),
    "benchmarks.peers": ("benchmarks.peers.compare", "main"),
    "benchmarks.tune": ("benchmarks.tune", "main"),
    "benchmarks.soak": ("benchmarks.soak", "main"),
    "benchmarks.hostile_clients": ("benchmarks.hostile_clients", "main"),
    "benchmarks.engine_throughput": ("benchmarks.engine_throughput", "main"),
    "benchmarks.decode_throughput": ("benchmarks.decode_throughput", "main"),
    "benchmarks.stage_contention": ("benchmarks.stage_contention", "main"),
    "benchmarks.pipeline_contention": ("benchmarks.pipeline_contention", "main"),
    "benchmarks.process_stages": ("benchmarks.process_stages", "main"),
    "benchmarks.scheduler_overhead": ("benchmarks.scheduler_overhead", "main"),
    "benchmarks.interpreter_budget": ("benchmarks.interpreter_budget", "main"),
    "benchmarks.profile_server": ("benchmarks.profile_server", "main"),
    "benchmarks.gpu_ceiling": ("benchmarks.gpu_ceiling", "main"),
    "service.tools.export_model": ("service.tools.export_model", "main"),
    "service.tools.gpu_check": ("service.tools.gpu_check", "main"),
    "deploy.render_haproxy": ("deploy.render_haproxy", "main"),
}
#: Flags of other programs the docs quote (pytest, pip, docker, nvidia-smi...).
FOREIGN = {"--help", "--gpus", "--stop-timeout", "--build-arg", "--no-deps", "--target", "--gil",
           "--threads", "--subprocesses", "--upgrade", "--query-gpu", "--format"}  # fmt: skip


class _Captured(Exception):
    pass


def _flags_of(module: str) -> set[str]:
    path, function = ENTRY_POINTS[module]
    entry = getattr(importlib.import_module(path), function)

    def capture(parser, *args, **kwargs):
        raise _Captured(parser)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture):
        try:
            entry([]) if inspect.signature(entry).parameters else entry()
        except _Captured as captured:
            parser = captured.args[0]
            return {flag for action in parser._actions for flag in action.option_strings}
    raise AssertionError(f"{path}.{function} built no parser")


@pytest.fixture(scope="module")
def flags() -> dict[str, set[str]]:
    return {module: _flags_of(module) for module in ENTRY_POINTS}


def test_every_flag_in_the_docs_is_taken_by_its_command(flags):
    every = set().union(*flags.values())
    wrong = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            named = re.findall(r"python3? -m ([\w.]+)", line)
            named += ["deploy.render_haproxy"] * ("deploy/render_haproxy.py" in line)
            known = set().union(*(flags[m] for m in named if m in flags)) if named else every
            if named and not known:
                continue  # a module this test does not know (pytest, pip, a tool's own)
            for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", line):
                if flag not in known and flag not in FOREIGN:
                    wrong.append(f"{doc.relative_to(REPO)}:{number}: {flag} ({named or 'any'})")
    assert wrong == []
