"""The tests' own layout: each test file sits in the folder that mirrors the code it tests
(``tests/service/rpc/`` for ``service/rpc/``), and no module under tests/ imports a test module.

Shared helpers live in ``tests/support/`` (or beside it as ``tests/<name>.py``), never in a test
module, so running or moving one test file never depends on another. The GPU tests keep one
folder, ``tests/gpu/``, the one path the GPU machine runs.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Test folders that mirror no folder of the code.
OWN_FOLDERS = {"gpu"}
#: Test files that may sit directly in tests/: the ones about tests/ itself.
TOP_LEVEL_TESTS = {"test_layout.py"}


def names_a_test_module(dotted: str) -> bool:
    return any(part.startswith("test_") for part in dotted.split("."))


def imported_test_modules(source: str) -> list[str]:
    """The test modules (a dotted part starting ``test_``) that a module's imports name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if names_a_test_module(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if names_a_test_module(module):
                found.append(module)
                continue
            prefix = module if module.endswith(".") else f"{module}."
            found += [prefix + a.name for a in node.names if names_a_test_module(a.name)]
    return sorted(set(found))


def layout_problems(repo: Path) -> list[str]:
    """Every way the tests under ``repo/tests`` break the layout rules, one line each."""
    tests = repo / "tests"
    problems = []
    by_name: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(tests.rglob("*.py")):
        relative = path.relative_to(tests)
        if relative.parts[0] == "data":
            continue
        for name in imported_test_modules(path.read_text()):
            problems.append(f"tests/{relative} imports the test module {name}")
        if not path.name.startswith("test_"):
            continue
        by_name[path.name].append(relative)
        folder = relative.parent
        if folder == Path("."):
            if path.name not in TOP_LEVEL_TESTS:
                problems.append(f"tests/{relative} sits in no package's folder")
        elif folder.parts[0] not in OWN_FOLDERS and not (repo / folder).is_dir():
            problems.append(f"tests/{relative}: no folder {folder}/ in the repository to mirror")
    for name, paths in by_name.items():
        if len(paths) > 1:  # no __init__.py: pytest imports test files by their file name
            problems.append(f"{name} is in several folders: {', '.join(map(str, paths))}")
    return problems


def test_the_tests_mirror_the_code_and_import_no_test_module():
    assert layout_problems(REPO) == []


def test_each_kind_of_problem_is_named(tmp_path):
    (tmp_path / "service" / "rpc").mkdir(parents=True)
    files = {
        "tests/service/rpc/test_server.py": "from tests.service.test_process import Process\n",
        "tests/service/test_process.py": "import tests.service.rpc.test_server\n",
        "tests/support/helpers.py": "from tests.service import test_process\n",
        "tests/unit/test_server.py": "from tests.support.helpers import x\n",
        "tests/test_loose.py": "",
        "tests/gpu/test_cuda.py": "from tests.support.helpers import x\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert layout_problems(tmp_path) == [
        "tests/service/rpc/test_server.py imports the test module tests.service.test_process",
        "tests/service/test_process.py imports the test module tests.service.rpc.test_server",
        "tests/support/helpers.py imports the test module tests.service.test_process",
        "tests/test_loose.py sits in no package's folder",
        "tests/unit/test_server.py: no folder unit/ in the repository to mirror",
        "test_server.py is in several folders: service/rpc/test_server.py, unit/test_server.py",
    ]


def test_a_relative_import_of_a_test_module_is_found():
    source = "from . import test_x, helpers\nfrom .test_y import z\nimport testing\n"
    assert imported_test_modules(source) == [".test_x", ".test_y"]
