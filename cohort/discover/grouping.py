"""Grouping image headers into stacks: one per SeriesInstanceUID, or several when one UID
holds images of different orientation, matrix or pixel spacing (scanners put a localizer
pair, screenshots of several sizes, or a second reconstruction under one UID).

Usable images without a SeriesInstanceUID are grouped by what they share instead: their
StudyInstanceUID, SeriesNumber and folder (`fallback_key`); their stacks' ``series_uid`` is
None and their key says that it was made up (``nouid-...``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Pixel spacings equal to this many decimals belong to one stack.
_SPACING_DECIMALS = 4


@dataclass(frozen=True)
class Stack:
    """Images (OBJECTS rows) of one SeriesInstanceUID that can form one volume."""

    series_uid: str | None  # None: its images have none (see `fallback_key`)
    index: int  # 1-based, largest stack first
    n_stacks: int  # stacks under this SeriesInstanceUID
    files: tuple[dict, ...]  # sorted by URI
    group: str | None = None  # the key of a series without UID (`fallback_key`)

    @property
    def key(self) -> str:
        """Unique name of the stack: the UID (or the group key of a series without one),
        with ``#index`` when it is split."""
        name = self.series_uid or self.group
        return name if self.n_stacks == 1 else f"{name}#{self.index}"


def fallback_key(row: dict) -> str:
    """The series key of an image without SeriesInstanceUID: made from its
    StudyInstanceUID and SeriesNumber, and a digest of its folder (folder names often hold
    patient names or IDs, and keys end up in file names)."""
    folder = row["uri"].rsplit("/", 1)[0]
    digest = hashlib.sha256(folder.encode()).hexdigest()[:12]
    number = row["series_number"]
    return (f"nouid-{row['study_uid'] or 'nostudy'}-"
            f"{'x' if number is None else number}-{digest}")


def iter_series(objects: pa.Table) -> Iterator[tuple[str, list[dict]]]:
    """``(series key, OBJECTS rows)`` per SeriesInstanceUID, sorted by key and URI: the UID
    for rows that have one, `fallback_key` for usable images that have none. Only one series
    at a time is turned into Python objects."""
    keys = group_keys(objects)
    if keys.null_count == len(keys):
        return
    grouped = objects.append_column("_group", keys).filter(pc.is_valid(keys))
    grouped = grouped.sort_by([("_group", "ascending"), ("uri", "ascending")])
    groups = grouped["_group"].to_numpy(zero_copy_only=False)
    grouped = grouped.drop_columns(["_group"])
    starts = np.flatnonzero(np.concatenate([[True], groups[1:] != groups[:-1]]))
    ends = np.append(starts[1:], len(groups))
    for start, end in zip(starts, ends, strict=True):
        yield str(groups[start]), grouped.slice(int(start), int(end - start)).to_pylist()


def group_keys(objects: pa.Table) -> pa.Array:
    """Per row: its SeriesInstanceUID; `fallback_key` for a usable image without one; null
    for the other rows (their objects are reported one by one)."""
    uids = objects["series_uid"].combine_chunks()
    orphans = pc.and_(pc.is_null(uids), pc.is_null(objects["error_code"]))
    if not pc.any(orphans).as_py():
        return uids
    keys = uids.to_pylist()
    for i in np.flatnonzero(orphans.to_numpy(zero_copy_only=False)):
        keys[i] = fallback_key({c: objects[c][int(i)].as_py()
                                for c in ("uri", "study_uid", "series_number")})
    return pa.array(keys, pa.string())


def split_stacks(series_uid: str, files: list[dict], *, orientation_tol: float = 1e-3
                 ) -> list[Stack]:
    """The stacks of one series (``series_uid``: its UID or, for images without one, its
    `fallback_key`): files clustered by ImageOrientationPatient (within
    ``orientation_tol``), then by (Rows, Columns, PixelSpacing). Largest stack first."""
    groups: list[tuple[tuple, list[dict]]] = []  # (key, files)
    for f in files:
        key = _geometry_key(f)
        for k, members in groups:
            if _same_key(k, key, orientation_tol):
                members.append(f)
                break
        else:
            groups.append((key, [f]))
    groups.sort(key=lambda g: (-len(g[1]), g[1][0]["uri"]))
    n = len(groups)
    if files and not files[0].get("series_uid"):  # a series without UID: keyed by group
        return [Stack(None, i, n, tuple(members), group=series_uid)
                for i, (_, members) in enumerate(groups, start=1)]
    return [Stack(series_uid, i, n, tuple(members))
            for i, (_, members) in enumerate(groups, start=1)]


def stack_of(stacks: list[Stack], row: dict, *, orientation_tol: float = 1e-3) -> Stack:
    """The stack an (unusable) object of the same series most likely belongs to."""
    key = _geometry_key(row)
    for s in stacks:
        if _same_key(_geometry_key(s.files[0]), key, orientation_tol):
            return s
    return stacks[0]


def _geometry_key(f: dict) -> tuple:
    iop = f.get("image_orientation")
    spacing = f.get("pixel_spacing_mm")
    return (tuple(iop) if iop else None, f.get("rows"), f.get("columns"),
            tuple(round(v, _SPACING_DECIMALS) for v in spacing) if spacing else None)


def _same_key(a: tuple, b: tuple, tol: float) -> bool:
    if a[1:] != b[1:]:
        return False
    if a[0] is None or b[0] is None:
        return a[0] is None and b[0] is None
    return max(abs(x - y) for x, y in zip(a[0], b[0], strict=True)) <= tol
