"""Fault injection: an archive with broken files and broken series. Every object ends in
exactly one manifest row with the right code; nothing is dropped, nothing raises."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from cohort.config import DiscoveryConfig, IndexConfig
from cohort.discover import build_index
from cohort.errors import ErrorCode

from .conftest import edited, series_bytes, write_dicomdir, write_series

LOCAL = IndexConfig(discovery=DiscoveryConfig(executor="local", files_per_task=40))


def _study(n: int) -> str:
    return f"1.2.826.0.1.3680043.99.{n}"


@pytest.fixture(scope="module")
def faulty(tmp_path_factory) -> tuple[Path, dict]:
    """An archive, one study per fault, and the manifest of it (local executor)."""
    root = tmp_path_factory.mktemp("faulty")
    uid = {name: f"{_study(n)}.2" for n, name in enumerate(
        ["good", "gap1", "gap6", "dup_few", "dup_many", "three", "mixed", "mr", "all_cut"],
        start=1)}
    study = {name: u.rsplit(".", 1)[0] for name, u in uid.items()}

    def make(name, n, **kw):
        return series_bytes(n, series_uid=uid[name], study_uid=study[name], **kw)

    good = write_series(root / "good", make("good", 30))
    data = make("gap1", 30)
    write_series(root / "gap1", data[:12] + data[13:])  # one slice missing
    data = make("gap6", 30)
    write_series(root / "gap6", data[:10] + data[16:])  # six in a row missing
    data = make("dup_few", 30)
    # two slices exported twice (new SOP instance UIDs, same positions)
    again = [edited(d, SOPInstanceUID=generate_uid()) for d in data[5:7]]
    write_series(root / "dup_few", data + again)
    data = make("dup_many", 20)
    write_series(root / "dup_many", data + [edited(d, SOPInstanceUID=generate_uid())
                                            for d in data])
    write_series(root / "three", make("three", 3))
    axial = make("mixed", 20)
    coronal = make("mixed", 18, coronal=True, z0=-40.0)
    write_series(root / "mixed", axial)
    write_series(root / "mixed", coronal, prefix="C")
    write_series(root / "mr", [edited(d, Modality="MR") for d in make("mr", 20)])
    write_series(root / "all_cut", [d[:-10] for d in make("all_cut", 20)])

    junk = root / "junk"
    junk.mkdir()
    (junk / "readme.txt").write_text("exported by hand\n")
    (junk / "empty.dcm").write_bytes(b"")
    whole = good[14].read_bytes()
    (junk / "cut-header").write_bytes(whole[:600])
    good[14].write_bytes(whole[:-100])  # cut in the pixels, inside the good series
    write_dicomdir(root / "DICOMDIR", "FAULTS")

    result = build_index(str(root), LOCAL)
    rows = result.manifest.to_pylist()
    return root, {"rows": rows, "uid": uid, "result": result, "cut": str(good[14])}


def _series(faulty, name: str) -> list[dict]:
    _, m = faulty
    return [r for r in m["rows"] if r["series_uid"] == m["uid"][name] and r["kind"] == "series"]


def _one(faulty, name: str) -> dict:
    rows = _series(faulty, name)
    assert len(rows) == 1, rows
    return rows[0]


def test_every_object_is_in_exactly_one_row(faulty):
    root, m = faulty
    listed = sorted(str(p) for p in root.rglob("*") if p.is_file())
    accounted = sorted(u for r in m["rows"] for u in r["files"] + (r["duplicate_files"] or []))
    assert accounted == listed
    assert sum(r["n_bytes"] for r in m["rows"]) == sum(Path(p).stat().st_size for p in listed)
    assert m["result"].objects.num_rows == len(listed)


def test_junk_objects_get_their_codes(faulty):
    root, m = faulty
    code = {Path(r["files"][0]).name: (r["status"], r["error_code"])
            for r in m["rows"] if r["kind"] == "object" and "/all_cut/" not in r["files"][0]}
    assert code == {
        "readme.txt": ("not_selected", ErrorCode.NOT_DICOM),
        "empty.dcm": ("not_selected", ErrorCode.NOT_DICOM),
        "DICOMDIR": ("not_selected", ErrorCode.DICOMDIR),
        "cut-header": ("failed", ErrorCode.TRUNCATED),
        "I150": ("failed", ErrorCode.TRUNCATED),  # the good series' slice cut in its pixels
    }


def test_a_slice_cut_in_its_pixels_leaves_a_gap_the_reader_fills(faulty):
    row = _one(faulty, "good")
    assert row["status"] == "selected"
    assert row["excluded_files"] == [faulty[1]["cut"]]
    assert row["n_files"] == 29 and row["missing_slices"] == 1
    assert row["tilt_correctable"] and row["needs_resampling"]


def test_gaps(faulty):
    one = _one(faulty, "gap1")
    assert (one["status"], one["missing_slices"], one["tilt_correctable"]) == ("selected", 1, True)
    assert one["n_files"] == 29 and one["coverage_mm"] == pytest.approx(145.0)
    six = _one(faulty, "gap6")
    assert (six["status"], six["error_code"]) == ("failed", ErrorCode.MISSING_SLICES)
    assert six["tilt_correctable"] is False
    assert "6 slices missing" in six["error_detail"]


def test_duplicates(faulty):
    few = _one(faulty, "dup_few")
    assert few["status"] == "selected"
    assert few["duplicate_slices"] == 2 and len(few["duplicate_files"]) == 2
    assert few["n_slices"] == 30 and len(few["files"]) == 30
    many = _one(faulty, "dup_many")
    assert (many["status"], many["error_code"]) == ("failed", ErrorCode.DUPLICATE_SLICES)
    assert len(many["files"]) == 40


def test_too_few_slices(faulty):
    row = _one(faulty, "three")
    assert (row["status"], row["error_code"]) == ("failed", ErrorCode.TOO_FEW_SLICES)
    assert len(row["files"]) == 3


def test_two_orientations_under_one_uid_become_two_stacks(faulty):
    rows = sorted(_series(faulty, "mixed"), key=lambda r: r["stack_index"])
    uid = faulty[1]["uid"]["mixed"]
    assert [r["series_key"] for r in rows] == [f"{uid}#1", f"{uid}#2"]
    assert [r["n_stacks"] for r in rows] == [2, 2]
    axial, coronal = rows
    assert (axial["n_files"], axial["status"]) == (20, "selected")
    assert (coronal["n_files"], coronal["status"], coronal["error_code"]) == (
        18, "not_selected", ErrorCode.NOT_AXIAL)
    assert all(Path(u).name.startswith("C") for u in coronal["files"])
    assert axial["selected_series_key"] == coronal["selected_series_key"] == f"{uid}#1"


def test_a_series_without_one_usable_file_still_has_its_row(faulty):
    row = _one(faulty, "all_cut")
    assert (row["status"], row["error_code"]) == ("failed", ErrorCode.TRUNCATED)
    assert row["files"] == [] and len(row["excluded_files"]) == 20
    assert "none of its 20 object(s) is a usable image (truncated 20)" in row["error_detail"]
    objects = [r for r in faulty[1]["rows"] if r["kind"] == "object"
               and r["series_uid"] == faulty[1]["uid"]["all_cut"]]
    assert sorted(r["files"][0] for r in objects) == sorted(row["excluded_files"])


def test_a_non_ct_series(faulty):
    row = _one(faulty, "mr")
    assert (row["status"], row["error_code"], row["modality"]) == (
        "not_selected", ErrorCode.NOT_CT, "MR")


def test_the_objects_table_names_each_images_manifest_row(faulty):
    _, m = faulty
    objects = m["result"].objects.to_pylist()
    keys = {r["series_key"] for r in m["rows"] if r["kind"] == "series"}
    for o in objects:
        assert (o["series_key"] in keys) == (o["error_code"] is None), o["uri"]


def test_no_names_or_birth_dates_anywhere(faulty):
    _, m = faulty
    text = repr(m["rows"]) + repr(m["result"].objects.to_pylist())
    assert "DOE" not in text and "JANE" not in text and "19500101" not in text
