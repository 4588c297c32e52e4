"""docs/backends.md has a row for every backend the library and the service register."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BACKENDS_PAGE = REPO / "docs" / "backends.md"

#: A fresh interpreter, so the fakes torchpipe_lite.testing registers in this one are not listed.
_LIST_SHIPPED = (
    "import json, torchpipe_lite, service.handlers.class_scores;"
    "print(json.dumps(torchpipe_lite.registered_backends()))"
)


def test_every_shipped_backend_has_a_row():
    listed = subprocess.run(
        [sys.executable, "-c", _LIST_SHIPPED],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    names = json.loads(listed.stdout.strip().splitlines()[-1])
    assert len(names) >= 20, names  # the registry was read, not an empty list
    rows = re.findall(r"^\| `(\w+)", BACKENDS_PAGE.read_text(), flags=re.MULTILINE)
    missing = sorted(set(names) - set(rows))
    assert missing == [], f"docs/backends.md has no row for {missing}"
