"""Choosing the series to analyse in each study, by rules a user can change
(`cohort.config.SelectionConfig`): soft-tissue kernels before bone kernels, full head
coverage, thin slices, more coverage; ties go to the lower SeriesNumber.

Candidates are the series rows `cohort.discover.series.describe_stack` left without a
status. The best candidate of each study becomes "selected"; every other candidate becomes
"not_selected" with error code `NOT_PREFERRED` and a message saying which rule decided and
what was chosen instead. Every series row of a study learns the selected series' key.
"""

from __future__ import annotations

import re
from collections import defaultdict
from functools import lru_cache

from cohort.config import SelectionConfig

#: error code of a candidate that lost to a better series of its study (not an ErrorCode:
#: nothing is wrong with it)
NOT_PREFERRED = "not_preferred"
KERNEL_RANK = {"soft": 0, "unknown": 1, "bone": 2}


def kernel_class(kernel: str | None, cfg: SelectionConfig) -> str:
    """"soft", "bone" or "unknown" for a ConvolutionKernel value."""
    if not kernel:
        return "unknown"
    name = kernel.strip()
    if any(p.fullmatch(name) for p in _compiled(cfg.soft_kernels)):
        return "soft"
    if any(p.fullmatch(name) for p in _compiled(cfg.bone_kernels)):
        return "bone"
    return "unknown"


@lru_cache(maxsize=32)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern, ...]:
    return tuple(re.compile(p, re.IGNORECASE) for p in patterns)


def select_series(rows: list[dict], cfg: SelectionConfig) -> None:
    """Decide, in place, the status of every candidate row (status None) per study, and set
    ``selected_series_key`` on every series row of a study that selected one."""
    by_study: dict[str | None, list[dict]] = defaultdict(list)
    for row in rows:
        row["kernel_class"] = kernel_class(row["kernel"], cfg)
        by_study[row["study_uid"]].append(row)
    for study_rows in by_study.values():
        candidates = [r for r in study_rows if r["status"] is None]
        if not candidates:
            continue
        ranked = sorted(candidates, key=lambda r: _rank(r, cfg))
        best = ranked[0]
        best.update(status="selected", error_code=None, error_detail=None)
        for row in ranked[1:]:
            row.update(status="not_selected", error_code=NOT_PREFERRED,
                       error_detail=_why_not(row, best, cfg))
        for row in study_rows:
            row["selected_series_key"] = best["series_key"]


def _thickness(row: dict) -> float:
    t = row["slice_thickness_mm"] or row["slice_step_mm"]
    return float(t) if t else float("inf")


def _criteria(row: dict, cfg: SelectionConfig) -> dict[str, float]:
    coverage = row["coverage_mm"] or 0.0
    return {
        "soft_kernel": KERNEL_RANK[row["kernel_class"]],
        "full_coverage": 0 if coverage >= cfg.min_coverage_mm else 1,
        "thin_slices": round(_thickness(row), 3),
        "more_coverage": -round(coverage, 1),
    }


def _rank(row: dict, cfg: SelectionConfig) -> tuple:
    c = _criteria(row, cfg)
    number = row["series_number"]
    return (*(c[name] for name in cfg.prefer), number is None, number or 0, row["series_key"])


def _describe(row: dict, criterion: str, cfg: SelectionConfig) -> str:
    if criterion == "soft_kernel":
        return f"{row['kernel_class']} kernel {row['kernel'] or '(none)'}"
    if criterion == "full_coverage":
        return (f"{row['coverage_mm'] or 0:.0f} mm coverage "
                f"({'at least' if (row['coverage_mm'] or 0) >= cfg.min_coverage_mm else 'below'}"
                f" {cfg.min_coverage_mm:g} mm)")
    if criterion == "thin_slices":
        return f"{_thickness(row):g} mm slices"
    return f"{row['coverage_mm'] or 0:.0f} mm coverage"


def _why_not(row: dict, best: dict, cfg: SelectionConfig) -> str:
    mine, theirs = _criteria(row, cfg), _criteria(best, cfg)
    decided = next((name for name in cfg.prefer if mine[name] != theirs[name]), None)
    if decided is None:
        return (f"as good as series {best['series_key']} by every rule; the lower "
                "SeriesNumber was selected")
    return (f"{_describe(row, decided, cfg)}; the study's series {best['series_key']} "
            f"has {_describe(best, decided, cfg)} and was selected "
            f"(rule {decided!r} of {', '.join(cfg.prefer)})")
