"""Discovery on a synthetic cohort, on Ray, checked against its ground truth: one row per
series, the primary soft-kernel series selected per study, measured tilt, file order."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cohort.config import DiscoveryConfig, IndexConfig
from cohort.discover import build_index
from cohort.errors import ErrorCode


@pytest.fixture(scope="module")
def indexed(small_cohort, ray_local):
    truth = pq.read_table(small_cohort / "ground_truth.parquet").to_pylist()
    cfg = IndexConfig(discovery=DiscoveryConfig(executor="ray", files_per_task=100))
    result = build_index(str(small_cohort / "dicom"), cfg)
    return truth, result


def _by_uid(result) -> dict[str, dict]:
    rows = [r for r in result.manifest.to_pylist() if r["kind"] == "series"]
    assert len({r["series_uid"] for r in rows}) == len(rows)
    return {r["series_uid"]: r for r in rows}


def test_the_cohort_has_every_role(indexed):
    truth, _ = indexed
    roles = {t["series_role"] for t in truth}
    assert roles == {"primary", "bone_kernel", "thick", "localizer"}
    assert {t["study_role"] for t in truth} == {"baseline", "followup"}
    assert any(abs(t["gantry_tilt_deg"]) > 5 for t in truth)


def test_one_row_per_series_and_nothing_else(indexed):
    truth, result = indexed
    assert result.manifest.num_rows == len(truth)
    assert set(_by_uid(result)) == {t["series_instance_uid"] for t in truth}


def test_the_primary_series_is_selected_in_every_study(indexed):
    truth, result = indexed
    rows = _by_uid(result)
    primary_of = {t["study_instance_uid"]: t["series_instance_uid"]
                  for t in truth if t["series_role"] == "primary"}
    for t in truth:
        row = rows[t["series_instance_uid"]]
        assert row["selected_series_key"] == primary_of[t["study_instance_uid"]]
        role = t["series_role"]
        if role == "primary":
            assert (row["status"], row["error_code"], row["kernel_class"]) == (
                "selected", None, "soft"), row
        elif role == "localizer":
            assert (row["status"], row["error_code"]) == ("not_selected", ErrorCode.LOCALIZER)
        else:
            assert (row["status"], row["error_code"]) == ("not_selected", "not_preferred")
            if role == "bone_kernel":
                assert row["kernel_class"] == "bone" and "bone kernel" in row["error_detail"]
            else:  # thick: same kernel, coverage within a slice, thicker slices
                assert "mm slices" in row["error_detail"]
                assert "thin_slices" in row["error_detail"]


def test_measured_tilt_and_geometry_match_the_ground_truth(indexed):
    truth, result = indexed
    rows = _by_uid(result)
    for t in truth:
        row = rows[t["series_instance_uid"]]
        # the header as written: GE's sign is the opposite of the measured one
        sign = -1 if t["manufacturer"].startswith("GE") else 1
        assert row["header_tilt_deg"] == pytest.approx(sign * t["gantry_tilt_deg"])
        if t["series_role"] == "localizer":
            continue
        assert row["tilt_deg"] == pytest.approx(t["gantry_tilt_deg"], abs=0.05)
        assert row["tilt_correctable"] is True
        assert row["needs_resampling"] == (t["gantry_tilt_deg"] != 0)
        assert row["n_slices"] == t["n_slices"] and row["missing_slices"] == 0
        # check_stack's step is along the plane normal: the table feed times cos(tilt)
        assert row["slice_step_mm"] == pytest.approx(
            t["slice_step_mm"] * math.cos(math.radians(t["gantry_tilt_deg"])), abs=1e-3)
        assert row["kernel"] == t["kernel"] and row["manufacturer"] == t["manufacturer"]
        assert row["slice_thickness_mm"] == t["slice_thickness_mm"]


def test_files_are_complete_and_in_anatomical_order(indexed, small_cohort):
    truth, result = indexed
    rows = _by_uid(result)
    z_of = {o["uri"]: o["image_position"][2] for o in result.objects.to_pylist()}
    for t in truth:
        files = rows[t["series_instance_uid"]]["files"]
        on_disk = sorted(str(p) for p in (small_cohort / t["dicom_dir"]).iterdir())
        assert sorted(files) == on_disk
        n = t["n_slices"]
        # instance 1 (IM0001) is the top slice: feet to head is IM<n> .. IM0001
        assert [Path(f).name for f in files] == [f"IM{n - k:04d}.dcm" for k in range(n)]
        z = [z_of[f] for f in files]
        assert z == sorted(z)


def test_header_bytes_are_counted(indexed):
    _, result = indexed
    s = result.stats
    assert s.objects == result.objects.num_rows
    # 48 x 48 slices are smaller than one header block: read whole, one request each
    assert s.range_requests == s.objects and s.header_bytes_read == s.object_bytes
