"""The segmenter stage's pieces: a crop's calcium summary moved onto the volume's slices is
the summary of the same mask on the whole volume."""

from __future__ import annotations

import numpy as np

from cohort.geometry import Grid
from cohort.job.calcium import _kji, on_volume
from cohort.preprocess.arterial_crop import Box
from cohort.quantify import plane_side, summarise_calcium


def test_a_crops_summary_on_the_volume_equals_the_whole_volumes():
    rng = np.random.default_rng(0)
    grid = Grid((-40.0, -40.0, -20.0), (0.5, 0, 0), (0, 0.5, 0), (0, 0, 2.0), (30, 160, 160))
    box = Box((8, 20), (40, 120), (30, 130))
    crop_mask = rng.random((80, 100, 12)) > 0.995  # (H, W, D)
    hu = rng.normal(300, 50, grid.shape).astype(np.float32)
    full = np.zeros(grid.shape, dtype=bool)
    full[box.k[0]:box.k[1], box.j[0]:box.j[1], box.i[0]:box.i[1]] = _kji(crop_mask)
    side = plane_side((0.0, 0.0, 0.0), (1.0, 0.0, 0.0))
    whole = summarise_calcium(full, hu, grid, side)
    crop_hu = box.take(hu)
    moved = on_volume(summarise_calcium(_kji(crop_mask), _kji(crop_hu), box.sub_grid(grid),
                                        side), box.k[0], grid.shape[0])
    assert moved.n_slices == whole.n_slices
    assert np.array_equal(moved.slice_voxels, whole.slice_voxels)
    assert np.allclose(moved.slice_peak_hu, whole.slice_peak_hu, equal_nan=True)
    assert np.array_equal(np.sort(moved.piece_first_slice), np.sort(whole.piece_first_slice))
    assert moved.voxel_mm3 == whole.voxel_mm3


def test_a_node_with_other_weights_is_refused(tmp_path):
    import hashlib

    import pytest

    from cohort.errors import ConfigError
    from cohort.job.checkpoint import verified_copy

    path = tmp_path / "w.pt"
    path.write_bytes(b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    assert verified_copy(str(path), None, good, "segmenter") == str(path)
    with pytest.raises(ConfigError, match="the segmenter on this node .* the driver checked"):
        verified_copy(str(path), None, "0" * 64, "segmenter")


def test_the_stage_batches_windows_by_device_and_an_explicit_size_wins():
    from cohort.job.calcium import WINDOWS_PER_BATCH, CalciumSegmenterStage

    cpu = CalciumSegmenterStage(None, prefer_gpu=False)
    assert cpu.device.type == "cpu"
    assert cpu.windows_per_batch == WINDOWS_PER_BATCH["cpu"]
    assert WINDOWS_PER_BATCH["cuda"] > WINDOWS_PER_BATCH["cpu"]
    assert CalciumSegmenterStage(None, prefer_gpu=False, windows_per_batch=7
                                 ).windows_per_batch == 7


def test_the_segmenter_knows_the_pixels_it_learned_from(tmp_path):
    import pytest
    import torch

    from cohort.errors import ConfigError
    from cohort.job.segmenter_checkpoint import describe_segmenter, shipped_segmenter

    info = describe_segmenter(None)
    lo, hi = info.trained_pixel_mm
    assert 0.3 < lo < hi < 0.6  # the generator's 512 x 512 phantoms
    assert info.spacing_note((lo + hi) / 2) is None
    assert info.spacing_note(hi * 1.2) is None  # within the margin
    assert "0.90 mm, outside" in info.spacing_note(0.9)
    assert "outside" in info.spacing_note(lo / 2)
    ckpt = torch.load(shipped_segmenter(), weights_only=True)
    del ckpt["meta"]["trained_pixel_mm"]
    torch.save(ckpt, tmp_path / "old.pt")
    assert describe_segmenter(str(tmp_path / "old.pt")).spacing_note(5.0) is None
    ckpt["meta"]["trained_pixel_mm"] = "fine"
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match="trained_pixel_mm"):
        describe_segmenter(str(tmp_path / "bad.pt"))
