"""Grouping image headers into stacks: one per SeriesInstanceUID, or several when one UID
holds images of different orientation, matrix or pixel spacing (scanners put a localizer
pair, screenshots of several sizes, or a second reconstruction under one UID).
"""

from __future__ import annotations

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

    series_uid: str
    index: int  # 1-based, largest stack first
    n_stacks: int  # stacks under this SeriesInstanceUID
    files: tuple[dict, ...]  # sorted by URI

    @property
    def key(self) -> str:
        """Unique name of the stack: the UID, with ``#index`` when the UID is split."""
        return self.series_uid if self.n_stacks == 1 else f"{self.series_uid}#{self.index}"


def iter_series(objects: pa.Table) -> Iterator[tuple[str, list[dict]]]:
    """``(series_uid, OBJECTS rows)`` per SeriesInstanceUID, for rows that have one, sorted
    by UID and URI. Only one series at a time is turned into Python objects."""
    with_uid = objects.filter(pc.is_valid(objects["series_uid"]))
    if with_uid.num_rows == 0:
        return
    with_uid = with_uid.sort_by([("series_uid", "ascending"), ("uri", "ascending")])
    uids = with_uid["series_uid"].to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.concatenate([[True], uids[1:] != uids[:-1]]))
    ends = np.append(starts[1:], len(uids))
    for start, end in zip(starts, ends, strict=True):
        yield str(uids[start]), with_uid.slice(int(start), int(end - start)).to_pylist()


def split_stacks(series_uid: str, files: list[dict], *, orientation_tol: float = 1e-3
                 ) -> list[Stack]:
    """The stacks of one series: files clustered by ImageOrientationPatient (within
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
