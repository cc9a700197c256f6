"""Indexing variable-thickness (stepped) head CT, and what the manifest says about the
sign of gantry tilt against the header."""

from __future__ import annotations

import pandas as pd
import pytest

from cohort.discover import build_index
from cohort.discover.series import tilt_note


def test_tilt_note_says_when_the_header_sign_is_a_known_convention():
    ge = tilt_note(18.5, -18.5, "GE MEDICAL SYSTEMS")
    assert "+18.5 deg as written" in ge and "measured -18.5" in ge
    assert "known convention of GE MEDICAL SYSTEMS" in ge
    assert tilt_note(-18.5, -18.5, "Philips") is None  # header and measure agree
    other = tilt_note(12.0, -12.0, "SIEMENS")
    assert "not a convention we know" in other
    assert "unexpected" in tilt_note(12.0, -12.0, "Philips")
    assert "the positions are used" in tilt_note(20.0, 5.0, "GE")  # magnitudes differ
    assert tilt_note(None, 10.0, "GE") is None


def test_stepped_series_are_selected_with_their_blocks(stepped_cohort, ray_local):
    root, _ = stepped_cohort
    m = build_index(str(root / "dicom")).manifest.to_pandas()
    m = m[m["kind"] == "series"]
    truth = pd.read_parquet(root / "ground_truth.parquet").set_index("series_instance_uid")
    assert (m["status"] == "selected").all(), m[["error_code", "error_detail"]]
    ge_noted = 0
    for r in m.itertuples():
        t = truth.loc[r.series_uid]
        assert r.variable_spacing and r.missing_slices == 0 and r.n_slices == t.n_slices
        blocks = list(r.spacing_blocks)
        assert [b["thickness_mm"] for b in blocks] == [t.slice_thickness_mm,
                                                        t.upper_slice_thickness_mm]
        assert [b["spacing_mm"] for b in blocks] == pytest.approx(
            [t.slice_thickness_mm, t.upper_slice_thickness_mm], abs=0.01)
        assert sum(b["n_slices"] for b in blocks) == t.n_slices
        assert r.tilt_deg == pytest.approx(t.gantry_tilt_deg, abs=0.02)
        if r.header_tilt_deg and r.manufacturer.startswith("GE"):
            assert r.header_tilt_deg == pytest.approx(-t.gantry_tilt_deg)
            assert any("known convention" in n for n in r.notes)
            ge_noted += 1
    assert ge_noted == 1  # the cohort holds one tilted GE series
