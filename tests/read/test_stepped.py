"""Reading a variable-thickness (stepped) head CT: the tilt-corrected volume against an
independent resampling of the raw slices, the truth grid, and the native slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy.ndimage import map_coordinates

from cohort.geometry import native_slice_of
from cohort.job.prepare import grids_match
from cohort.read.nifti import read_nifti
from cohort.read.series import read_series, volume_to_native


@pytest.fixture(scope="module")
def truth(stepped_cohort):
    root, _ = stepped_cohort
    t = pd.read_parquet(root / "ground_truth.parquet")
    return t[t["series_role"] == "primary"]


def _files(root: Path, rel: str) -> list[str]:
    return sorted(str(p) for p in (root / rel).iterdir())


def _raw_slices(files: list[str]):
    """HU, position, row/column unit vectors and pixel spacing of every slice, read with
    pydicom alone, sorted along the slice normal."""
    out = []
    for f in files:
        ds = pydicom.dcmread(f)
        hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(
            ds.RescaleIntercept)
        iop = np.array(ds.ImageOrientationPatient, dtype=float)
        out.append((hu, np.array(ds.ImagePositionPatient, dtype=float), iop[:3], iop[3:],
                    [float(v) for v in ds.PixelSpacing]))
    normal = np.cross(out[0][2], out[0][3])
    normal *= np.sign(normal[2])
    out.sort(key=lambda s: s[1] @ normal)
    return out, normal


def _reference(files: list[str], grid) -> np.ndarray:
    """Each voxel of ``grid`` sampled from the raw slices: bilinear in the two slices
    around it along the normal (at its own projection onto each), linear between them."""
    raw, normal = _raw_slices(files)
    d = np.array([s[1] @ normal for s in raw])
    nk, nj, ni = grid.shape
    out = np.full(grid.shape, np.nan, dtype=np.float32)
    jj, ii = np.meshgrid(np.arange(nj, dtype=float), np.arange(ni, dtype=float), indexing="ij")
    for k in range(nk):
        p = grid.world(ii, jj, np.full_like(ii, k))  # (nj, ni, 3)
        dp = p @ normal
        hi = np.clip(np.searchsorted(d, dp), 1, len(d) - 1)
        lo = hi - 1
        w = (dp - d[lo]) / (d[hi] - d[lo])
        inside = (w >= 0) & (w <= 1)
        values = np.zeros((2, nj, ni), dtype=np.float32)
        for side, idx in enumerate((lo, hi)):
            for s in np.unique(idx[inside]):
                hu, ipp, row, col, (dr, dc) = raw[s]
                sel = inside & (idx == s)
                rel = p[sel] - ipp
                coords = np.stack([rel @ col / dr, rel @ row / dc])
                values[side][sel] = map_coordinates(hu, coords, order=1, mode="nearest")
        out[k][inside] = ((1 - w) * values[0] + w * values[1])[inside]
    return out


def test_stepped_series_read_onto_their_truth_grid_with_native_slices(stepped_cohort, truth):
    root, _ = stepped_cohort
    assert truth["variable_spacing"].all() and (truth["gantry_tilt_deg"] != 0).any()
    for t in truth.itertuples():
        vol = read_series(_files(root, t.dicom_dir), series=t.series_instance_uid)
        p = vol.provenance
        assert p["variable_spacing"] and len(p["spacing_blocks"]) == 2
        assert [b["thickness_mm"] for b in p["spacing_blocks"]] == [
            t.slice_thickness_mm, t.upper_slice_thickness_mm]
        assert vol.grid.shape[0] == t.truth_grid_slices
        assert p["tilt_deg"] == pytest.approx(t.gantry_tilt_deg, abs=0.02)
        mask = read_nifti(str(root / t.mask_path))
        assert grids_match(mask.grid, vol.grid)
        assert len(p["native_slice_z_mm"]) == t.n_slices
        # native slices of the landmarks, from the truth z, are the truth's slices
        for name in ("left_carotid_canal", "right_anterior_clinoid"):
            k = native_slice_of(getattr(t, f"{name}_z_mm"), p["native_slice_z_mm"],
                                p["native_slice_height_mm"])
            assert k == getattr(t, f"{name}_slice")
        native = volume_to_native(vol)
        assert native[0] == 0 and np.all(np.diff(native) >= 0)
        # the truth grid steps by the thin block's spacing, no more than any slice is high,
        # so it lands in every acquired slice; it stops at the last whole step below the
        # top slice's centre, which may lie under that slice's lower edge
        assert set(range(t.n_slices - 1)) <= set(native.tolist())
        assert native[-1] in (t.n_slices - 2, t.n_slices - 1)


def test_tilt_corrected_stepped_volume_matches_an_exact_resampling(stepped_cohort, truth):
    root, _ = stepped_cohort
    tilted = truth[truth["gantry_tilt_deg"] != 0].iloc[0]
    files = _files(root, tilted.dicom_dir)
    vol = read_series(files, series=tilted.series_instance_uid)
    assert vol.provenance["tilt_corrected"]
    ref = _reference(files, vol.grid)
    both = ~np.isnan(ref) & (vol.array > -1024)
    assert both.mean() > 0.5
    a, b = vol.array[both] - vol.array[both].mean(), ref[both] - ref[both].mean()
    ncc = float(a @ b / np.sqrt((a @ a) * (b @ b)))
    assert ncc >= 0.98, ncc


def test_truth_of_tilted_stepped_series_holds_only_imaged_calcium(stepped_cohort, truth):
    """The tilt correction leaves air (whole rows) where no sheared slice reaches; calcium
    there was never imaged, so the truth mask must not hold it (as for regular stacks,
    `cohort.synth.scan.observed_rows`)."""
    from cohort.read.resample import AIR_HU

    root, _ = stepped_cohort
    tilted = truth[truth["gantry_tilt_deg"] != 0]
    assert len(tilted) >= 2
    unseen_total = 0
    for t in tilted.itertuples():
        vol = read_series(_files(root, t.dicom_dir), series=t.series_instance_uid)
        mask = read_nifti(str(root / t.mask_path)).array > 0
        air_rows = (vol.array == AIR_HU).all(axis=2)  # (slices, rows) never imaged
        assert air_rows.any()  # a tilted stack leaves some
        unseen_total += int(mask[air_rows].sum())
    assert unseen_total == 0
