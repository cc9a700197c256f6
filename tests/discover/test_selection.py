"""Selection rules on hand-made rows: kernel classes per vendor, the ranking order, the
reason a loser is given, and rules a user changes in SelectionConfig."""

from __future__ import annotations

import pytest

from cohort.config import SelectionConfig
from cohort.discover.selection import NOT_PREFERRED, kernel_class, select_series
from cohort.errors import ConfigError
from cohort.schemas import MANIFEST

CFG = SelectionConfig()


@pytest.mark.parametrize("kernel,expected", [
    ("STANDARD", "soft"), ("SOFT", "soft"), ("BONE", "bone"), ("BONEPLUS", "bone"),
    ("LUNG", "bone"), ("H31s", "soft"), ("J40s", "soft"), ("Hr40", "soft"), ("Hr40f", "soft"),
    ("H60s", "bone"), ("H70h", "bone"), ("H90s", "bone"), ("J70h", "bone"), ("Hr60", "bone"),
    ("Br64", "bone"), ("UB", "soft"), ("UC", "soft"), ("EC", "soft"), ("YC", "bone"),
    ("YD", "bone"), ("D", "bone"), ("FC21", "soft"), ("FC26", "soft"), ("FC30", "bone"),
    ("FC81", "bone"), ("standard", "soft"), ("XYZ", "unknown"), (None, "unknown"),
])
def test_kernel_classes(kernel, expected):
    assert kernel_class(kernel, CFG) == expected


def row(key: str, *, kernel="UB", thickness=5.0, coverage=180.0, number=2, status=None,
        study="S1") -> dict:
    r = dict.fromkeys(MANIFEST.names)
    r.update(kind="series", series_key=key, series_uid=key, study_uid=study, kernel=kernel,
             slice_thickness_mm=thickness, coverage_mm=coverage, series_number=number,
             status=status)
    return r


def test_soft_kernel_then_coverage_then_thin_slices():
    rows = [row("bone-thin", kernel="YC", thickness=1.0, number=3),
            row("soft-partial", thickness=0.625, coverage=80.0, number=4),
            row("soft-5mm", thickness=5.0, number=5),
            row("soft-2mm", thickness=2.0, coverage=170.0, number=6),
            row("localizer", status="not_selected", number=1)]
    select_series(rows, CFG)
    status = {r["series_key"]: (r["status"], r["error_code"]) for r in rows}
    assert status == {"bone-thin": ("not_selected", NOT_PREFERRED),
                      "soft-partial": ("not_selected", NOT_PREFERRED),
                      "soft-5mm": ("not_selected", NOT_PREFERRED),
                      "soft-2mm": ("selected", None),
                      "localizer": ("not_selected", None)}
    assert {r["selected_series_key"] for r in rows} == {"soft-2mm"}
    why = {r["series_key"]: r["error_detail"] for r in rows}
    assert why["bone-thin"].startswith("bone kernel YC; the study's series soft-2mm has soft "
                                       "kernel UB")
    assert why["soft-partial"].startswith("80 mm coverage (below 120 mm)")
    assert why["soft-5mm"].startswith("5 mm slices; the study's series soft-2mm has 2 mm")


def test_each_study_selects_its_own_and_ties_go_to_the_lower_series_number():
    rows = [row("a", number=7), row("b", number=3), row("c", study="S2")]
    select_series(rows, CFG)
    assert [r["status"] for r in rows] == ["not_selected", "selected", "selected"]
    assert "lower SeriesNumber" in rows[0]["error_detail"]


def test_the_user_can_put_thin_slices_before_kernels():
    cfg = SelectionConfig(prefer=("thin_slices", "soft_kernel"))
    rows = [row("soft", thickness=5.0), row("bone", kernel="BONE", thickness=1.0)]
    select_series(rows, cfg)
    assert [r["status"] for r in rows] == ["not_selected", "selected"]


@pytest.mark.parametrize("kw,needle", [
    ({"prefer": ("fast",)}, "--prefer takes distinct criteria"),
    ({"soft_kernels": ("H[",)}, "is not a regular expression"),
    ({"min_coverage_mm": -1.0}, "--min-coverage"),
    ({"modalities": ()}, "at least one Modality"),
])
def test_bad_selection_config_is_refused(kw, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        SelectionConfig(**kw)
