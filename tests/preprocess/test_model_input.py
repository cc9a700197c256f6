"""Model input: native depth, mapping back to slices and z, centring, decimation."""

import numpy as np
import pytest

from cohort.geometry import Grid
from cohort.preprocess.model_input import ModelInputConfig, prepare
from cohort.read.volume import Volume


def _volume(nk=40, n=256, px=0.9, dz=2.5, centre=(10.0, -20.0)):
    grid = Grid((-px * (n - 1) / 2, -px * (n - 1) / 2, -50.0), (px, 0, 0), (0, px, 0),
                (0, 0, dz), (nk, n, n))
    arr = np.full(grid.shape, -1024.0, dtype=np.float32)
    jj, ii = np.mgrid[:n, :n]
    x = grid.origin[0] + ii * px
    y = grid.origin[1] + jj * px
    head = (x - centre[0]) ** 2 / 70**2 + (y - centre[1]) ** 2 / 90**2 <= 1
    arr[:, head] = 40.0
    arr[:, (x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= 5**2] = 1000.0  # a bone marker
    for k in range(nk):
        arr[k, 0, 0] = k  # a per-slice signature outside the head
    return Volume(arr, grid, "1.2.3")


def test_depth_is_native_and_maps_back():
    vol = _volume()
    mi = prepare(vol)
    assert mi.array.shape == (128, 128, 40)
    assert mi.decimation == 1
    np.testing.assert_array_equal(mi.slice_index, np.arange(40))
    np.testing.assert_allclose(mi.to_z_mm([0, 39]), [-50.0, -50.0 + 39 * 2.5])
    assert 0.0 <= mi.array.min() and mi.array.max() <= 1.0


def test_the_head_is_centred_and_the_window_keeps_bone_and_soft_tissue():
    vol = _volume(centre=(25.0, -30.0))
    cfg = ModelInputConfig()
    mi = prepare(vol, cfg)
    assert mi.centre_mm[0] == pytest.approx(25.0, abs=1.5)
    assert mi.centre_mm[1] == pytest.approx(-30.0, abs=1.5)
    centre = mi.array[63:65, 63:65, 5]  # the bone marker lands in the middle
    assert centre.min() > 0.75
    soft = (40 - cfg.window_low_hu) / (cfg.window_high_hu - cfg.window_low_hu)
    assert mi.array[64, 30, 5] == pytest.approx(soft, abs=0.02)
    assert mi.array[0, 0, 5] == 0.0  # air outside


def test_deeper_than_max_len_keeps_every_fth_native_slice():
    vol = _volume(nk=100, n=64)
    mi = prepare(vol, ModelInputConfig(max_len=40))
    assert mi.decimation == 3
    assert mi.depth == 34
    np.testing.assert_array_equal(mi.slice_index[:4], [0, 3, 6, 9])
    np.testing.assert_allclose(mi.slice_z_mm, vol.slice_z_mm()[::3])


def test_a_stepped_volume_gives_every_slice_or_only_the_acquired_ones(stepped_cohort):
    """depth="volume" (default): every slice of the finest-spacing volume; "native": the
    volume slices nearest the acquired ones, one each."""
    import pandas as pd

    from cohort.read.series import read_series

    root, _ = stepped_cohort
    t = pd.read_parquet(root / "ground_truth.parquet").iloc[0]
    files = sorted(str(p) for p in (root / t.dicom_dir).iterdir())
    vol = read_series(files)
    every = prepare(vol, ModelInputConfig(size=32))
    native = prepare(vol, ModelInputConfig(size=32, depth="native"))
    assert every.depth == vol.grid.shape[0] == t.truth_grid_slices
    assert native.depth == t.n_slices < every.depth
    assert np.all(np.diff(native.slice_z_mm) > 0)
    with pytest.raises(ValueError, match="'volume' or 'native'"):
        ModelInputConfig(depth="resampled")


def test_the_skull_base_crop_centres_on_the_cranium_not_on_the_neck():
    """A cranium above a narrow neck placed far back: the skull-base field of view centres on
    the cranium's centroid, ``anterior_mm`` forward (LPS: -y), whatever the neck does."""
    vol = _volume(nk=40, centre=(5.0, 0.0))
    arr = vol.array.copy()
    grid = vol.grid
    n = grid.shape[1]
    jj, ii = np.mgrid[:n, :n]
    x, y = grid.origin[0] + ii * 0.9, grid.origin[1] + jj * 0.9
    neck = (x - 5.0) ** 2 + (y - 60.0) ** 2 <= 30**2
    arr[:15] = -1024.0
    arr[:15, neck] = 40.0  # 15 neck slices, centred 60 mm behind the cranium
    vol = Volume(arr, grid, "1.2.3")
    head = prepare(vol, ModelInputConfig())
    base = prepare(vol, ModelInputConfig(crop="skull_base", fov_mm=128.0, size=64,
                                         anterior_mm=12.0))
    assert head.centre_mm[1] > 3.0  # the whole-head centroid is pulled towards the neck
    assert base.centre_mm[0] == pytest.approx(5.0, abs=1.5)
    assert base.centre_mm[1] == pytest.approx(-12.0, abs=1.5)
    assert base.pixel_mm == pytest.approx(2.0) and base.array.shape[:2] == (64, 64)


def test_the_skull_base_field_of_view_holds_every_landmark_of_synthetic_heads():
    """Six synthetic heads (turned, shifted, some with the neck cut): every landmark's
    in-plane point lies inside the 128 mm skull-base field of view, 10 mm from its edge."""
    from cohort.anatomy import LANDMARK_KINDS, SIDES
    from cohort.synth.series import synthesize_series

    cfg = ModelInputConfig(crop="skull_base", fov_mm=128.0, size=64)
    for index in range(6):
        s = synthesize_series(2024, index, matrix=96, thickness_mm=5.0,
                              neck_cut_p=0.5, render_scale=1)
        vol = Volume(s.image.astype(np.float32), s.grid, "1.2.3")
        cx, cy = prepare(vol, cfg).centre_mm
        for side in SIDES:
            for kind in LANDMARK_KINDS:
                p = s.placement.to_world(s.phantom.landmark_point(side, kind))
                assert abs(p[0] - cx) < 64 - 10 and abs(p[1] - cy) < 64 - 10, (index, side,
                                                                                kind)


def test_an_unknown_crop_is_refused():
    with pytest.raises(Exception, match="crop must be one of head, skull_base"):
        ModelInputConfig(crop="brain")
