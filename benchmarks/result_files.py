"""Where a benchmark's result file goes: by date, device, commit and label, never over another."""

from __future__ import annotations

import datetime
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Where the stage benchmarks write by default: ignored by git, so a local run never leaves an
#: untracked file among the committed figures of ``benchmarks/results``.
LOCAL_RESULTS_DIR = REPO_ROOT / "benchmarks" / "results" / "local"


def git_commit() -> str:
    """The commit the run is of: ``$GIT_COMMIT`` when set (a copy of the tree without its
    history, as on the lent GPU box, where git would answer for some other checkout), else
    this checkout's (``-dirty`` with uncommitted changes)."""
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git here; set GIT_COMMIT)"
    return head + ("-dirty" if status else "")


def short_commit(commit: str) -> str:
    """The commit as a file name takes it: ``0763a2b``, ``0763a2b-dirty``, or ``nogit``."""
    head, _, rest = commit.partition("-")
    if not head or any(char not in "0123456789abcdef" for char in head.lower()):
        return "nogit"
    return head[:7].lower() + ("-dirty" if rest.startswith("dirty") else "")


def result_stem(
    device: str, label: str, *, commit: str | None = None, day: str | None = None
) -> str:
    """``<date>-<device>-<commit>-<label>``, e.g. ``2026-12-05-cpu-0763a2b-demo``."""
    day = day or datetime.date.today().isoformat()
    commit = short_commit(commit if commit is not None else git_commit())
    return "-".join(part for part in (day, device, commit, label) if part)


def claim_result_path(directory: Path, stem: str, suffix: str = ".json") -> Path:
    """A new file ``<stem><suffix>`` under ``directory``, created empty so that no other run
    takes the name; ``<stem>-2``, ``-3``... when the name is already taken (two runs of one
    label on one day and commit keep both)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    candidate, number = directory / f"{stem}{suffix}", 1
    while True:
        try:
            with open(candidate, "x"):
                return candidate
        except FileExistsError:
            number += 1
            candidate = directory / f"{stem}-{number}{suffix}"
