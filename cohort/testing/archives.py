"""Archives laid out as real ones are: a synthetic cohort spread over several inputs (sites,
buckets), for tests of one index over several inputs."""

from __future__ import annotations

import shutil
from pathlib import Path


def split_archive(src: Path, a: Path, b: Path) -> tuple[str, int]:
    """Copy the patient folders of ``src`` to ``a`` (first half) and ``b`` (second half),
    then move the upper half of the slices of the largest series folder of ``a`` to the same
    place under ``b``. Returns that series folder (relative) and the slices moved."""
    patients = sorted(p.name for p in src.iterdir())
    half = len(patients) // 2
    for k, name in enumerate(patients):
        shutil.copytree(src / name, (a if k < half else b) / name)
    folders = sorted(p for p in a.rglob("*") if p.is_dir() and any(p.glob("*.dcm")))
    series = max(folders, key=lambda p: len(list(p.glob("*.dcm"))))
    files = sorted(series.glob("*.dcm"))
    moved = files[len(files) // 2:]
    target = b / series.relative_to(a)
    target.mkdir(parents=True)
    for f in moved:
        shutil.move(f, target / f.name)
    return str(series.relative_to(a)), len(moved)
