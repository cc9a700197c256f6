"""This checkout and a baseline commit's code side by side, for benchmarks that compare
the two in one run: the baseline is a git worktree, removed afterwards."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def code_versions(baseline_ref: str | None, tmp: Path) -> Iterator[dict[str, str]]:
    """``{"this checkout": REPO, "baseline REF": worktree}`` (no baseline when ``baseline_ref``
    is empty): put a path on ``PYTHONPATH`` to run that code."""
    codes = {"this checkout": str(REPO)}
    wt = tmp / "baseline"
    if baseline_ref:
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(wt),
                        baseline_ref], check=True, capture_output=True)
        codes[f"baseline {baseline_ref}"] = str(wt)
    try:
        yield codes
    finally:
        if baseline_ref:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(wt)],
                           capture_output=True)
