"""Flags that mean something: a series with every second slice missing, a bad or missing
mask that keeps the landmarks, and risk groups that say which cut-offs made them."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from cohort.anatomy import LANDMARKS
from cohort.cli import main
from cohort.discover import build_index
from cohort.query import connect
from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort


@pytest.fixture(scope="module")
def thin_cohort(tmp_path_factory):
    """Three 1.25 mm series; the first loses every second slice, the second its mask."""
    root = tmp_path_factory.mktemp("thin") / "cohort"
    generate_cohort(SynthConfig(patients=3, seed=21, matrix=128, thicknesses_mm=(1.25,),
                                tilt_p=0.0, localizer_p=0.0, second_series_p=0.0,
                                followup_p=0.0, neck_cut_p=0.0, workers=1), str(root))
    truth = pd.read_parquet(root / "ground_truth.parquet").sort_values("series_instance_uid")
    sparse, unmasked = truth.iloc[0], truth.iloc[1]
    files = sorted((root / sparse.dicom_dir).iterdir())
    for f in files[1::2]:
        f.unlink()
    masks = root.parent / "masks"
    shutil.copytree(root / "masks", masks)
    (masks / f"{unmasked.series_instance_uid}.nii.gz").unlink()
    return root, masks, sparse, unmasked, len(files)


def test_every_second_slice_missing_is_measured_at_indexing(thin_cohort, ray_local):
    root, _, sparse, _, n_files = thin_cohort
    m = build_index(str(root / "dicom")).manifest.to_pandas().set_index("series_uid")
    row = m.loc[sparse.series_instance_uid]
    assert row.status == "selected" and row.sparse_slices
    kept = (n_files + 1) // 2
    note = next(n for n in row.notes if n.startswith("sparse_slices"))
    assert f"{kept} slices 2.5 mm apart, 1.25 mm thick: 50% of the depth" in note
    assert not m.drop(sparse.series_instance_uid)["sparse_slices"].any()


@pytest.mark.timeout(900)
def test_mask_problems_keep_landmarks_and_say_why(thin_cohort, tiny_checkpoint, ray_local,
                                                  tmp_path, capsys):
    root, masks, sparse, unmasked, n_files = thin_cohort
    out = tmp_path / "out"
    assert main(["run", str(root / "dicom"), "--out", str(out), "--model",
                 str(tiny_checkpoint), "--masks", str(masks), "--salt", "s", "--qc", "none",
                 "--risk-cutoffs", "0", "5", "50"]) == 0
    rows = connect(str(out)).sql("SELECT * FROM series").to_arrow_table().to_pandas()
    rows = rows.set_index("series_uid")
    assert (rows["status"] == "ok").all()
    bad = rows.loc[sparse.series_instance_uid]
    assert bad.error_code == "mask_mismatch" and not bad.volumes_computed
    assert f"the mask has {n_files} slices, the series {(n_files + 1) // 2}" in bad.error_detail
    assert "the series is sparse" in bad.error_detail
    assert {"sparse_slices", "mask_problem"} <= set(bad.qc_flags)
    missing = rows.loc[unmasked.series_instance_uid]
    assert missing.error_code == "mask_missing" and "mask_problem" in missing.qc_flags
    for r in (bad, missing):  # the image was fine: its landmarks are there
        assert all(r[f"{n}_slice"] is not None for n in LANDMARKS)
        assert r.total_calcium_mm3 is None or pd.isna(r.total_calcium_mm3)
    good = rows.drop([sparse.series_instance_uid, unmasked.series_instance_uid]).iloc[0]
    assert good.volumes_computed and pd.isna(good.error_code)
    assert good.risk_scheme == ("none <= 0 < low <= 5 < moderate <= 50 < high "
                                "(total mm^3; given with --risk-cutoffs)")
    strict = tmp_path / "strict"
    assert main(["run", str(root / "dicom"), "--out", str(strict), "--model",
                 str(tiny_checkpoint), "--masks", str(masks), "--salt", "s", "--qc", "none",
                 "--mask-errors"]) == 0
    rows = connect(str(strict)).sql("SELECT series_uid, status, error_code, risk_scheme "
                                    "FROM series").to_arrow_table().to_pandas()
    rows = rows.set_index("series_uid")
    assert rows.loc[sparse.series_instance_uid, "status"] == "error"
    assert rows.loc[unmasked.series_instance_uid, "error_code"] == "mask_missing"
    assert "placeholder default" in rows["risk_scheme"].dropna().iloc[0]


def test_risk_cutoffs_are_in_the_help_with_where_they_come_from(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--risk-cutoffs" in text and "PLACEHOLDERS" in text and "[0.0, 10.0, 100.0]" in text


def test_risk_groups_must_match_the_cutoffs(tmp_path, capsys):
    assert main(["run", str(tmp_path), "--out", str(tmp_path / "o"), "--salt", "s",
                 "--risk-cutoffs", "0", "10"]) == 2
    assert "give --risk-groups with 3 names" in capsys.readouterr().err
