"""The CPU stage on real files: mask geometry checks, time limit, errors as codes."""

from pathlib import Path

import pandas as pd
import pytest
import SimpleITK as sitk

from cohort.errors import ErrorCode, SeriesError
from cohort.job.packing import unpack
from cohort.job.prepare import PrepareConfig, prepare_isolated, prepare_series
from cohort.preprocess.model_input import ModelInputConfig
from cohort.testing.faults import hang


def _primary(root: Path):
    truth = pd.read_parquet(root / "ground_truth.parquet")
    row = truth[(truth["series_role"] == "primary") & (truth["gantry_tilt_deg"] == 0)].iloc[0]
    files = sorted(str(p) for p in (root / row["dicom_dir"]).iterdir())
    return row, files


def test_prepare_keeps_only_small_things(varied_cohort):
    root, _ = varied_cohort
    row, files = _primary(root)
    out = prepare_series(files, row["series_instance_uid"], PrepareConfig(
        model_input=ModelInputConfig(size=32), masks_url=str(root / "masks")))
    x = unpack(out["model_input"])["x"]
    assert x.shape == (32, 32, row["n_slices"]) and x.dtype.name == "float16"
    calcium = unpack(out["calcium"])
    assert int(calcium["slice_voxels"].sum()) == sum(
        row[c] for c in row.index if c.endswith("_voxels"))
    assert out["n_slices"] == row["n_slices"] and out["midline_used"]


def test_a_mask_on_another_grid_is_an_error_code(varied_cohort, tmp_path):
    """With mask_problems="error" it fails the series; by default it is a note on a row
    that keeps its landmarks."""
    root, _ = varied_cohort
    row, files = _primary(root)
    uid = row["series_instance_uid"]
    img = sitk.ReadImage(str(root / "masks" / f"{uid}.nii.gz"))
    img.SetOrigin(tuple(v + 5.0 for v in img.GetOrigin()))  # shifted 5 mm
    sitk.WriteImage(img, str(tmp_path / f"{uid}.nii.gz"))
    with pytest.raises(SeriesError) as e:
        prepare_series(files, uid, PrepareConfig(model_input=ModelInputConfig(size=32),
                                                 masks_url=str(tmp_path),
                                                 mask_problems="error"))
    assert e.value.code == ErrorCode.MASK_MISMATCH and "grid" in str(e.value)
    noted = prepare_series(files, uid, PrepareConfig(model_input=ModelInputConfig(size=32),
                                                     masks_url=str(tmp_path)))
    assert noted["calcium"] is None and noted["model_input"] is not None
    assert noted["mask_problem"]["code"] == "mask_mismatch"
    # same shape and origin, twice the spacing: the message shows what differs
    img = sitk.ReadImage(str(root / "masks" / f"{uid}.nii.gz"))
    doubled = [2 * v for v in img.GetSpacing()]
    img.SetSpacing(doubled)
    sitk.WriteImage(img, str(tmp_path / f"{uid}.nii.gz"))
    with pytest.raises(SeriesError) as e:
        prepare_series(files, uid, PrepareConfig(model_input=ModelInputConfig(size=32),
                                                 masks_url=str(tmp_path),
                                                 mask_problems="error"))
    assert e.value.code == ErrorCode.MASK_MISMATCH
    assert f"spacing {[round(v, 3) for v in doubled]} mm" in str(e.value)


def test_a_series_that_hangs_is_cut_off(monkeypatch):
    from cohort.job import prepare as module

    with pytest.raises(SeriesError) as e:
        module.run_isolated(hang, 60.0, timeout_s=1.0, series="1.2.3")
    assert e.value.code == ErrorCode.TIMEOUT and "1.2.3" in str(e.value)
    # the worker process is replaced: the next series runs
    with pytest.raises(SeriesError) as e:
        prepare_isolated(["/nonexistent/file.dcm"], "4.5.6", PrepareConfig(timeout_s=1.0))
    assert e.value.code == ErrorCode.IO_ERROR
