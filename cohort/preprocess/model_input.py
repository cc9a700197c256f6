"""From a HU `Volume` to the DST's input: intensity window, in-plane resampling to the
model's grid, depth kept at the native slice positions.

The paper insists on full depth resolution, so slices are never interpolated along depth.
The one exception is explicit: a volume with more slices than the model's ``max_len`` keeps
every f-th slice (f the smallest whole factor that fits), still at native positions, and
the mapping back to volume slices and z says so.

A variable-thickness stack (contiguous blocks, `cohort.read.stack`) is read onto the finest
block's spacing. ``depth="volume"`` (the default) gives the model every slice of that
volume, so its positions are evenly spaced in z as in training; ``depth="native"`` gives
it only the volume slices nearest the acquired ones, so thick blocks come out shorter in
the sequence than they are in the head. `benchmarks/bench_variable_spacing.py` measures
both on synthetic stepped protocols (the README gives the figures behind the default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cohort.errors import ConfigError
from cohort.read.volume import Volume


@dataclass(frozen=True)
class ModelInputConfig:
    size: int = 128  # model pixels per side (in-plane)
    fov_mm: float = 240.0  # physical field of view the model sees, centred on the head
    window_low_hu: float = -600.0  # CT numbers mapped linearly to [0, 1] between these
    window_high_hu: float = 1400.0  # (soft tissue, bone and calcium all keep contrast)
    max_len: int = 512  # the model's longest sequence
    head_threshold_hu: float = -500.0  # voxels above this are "head" for centring
    #: which slices of a variable-thickness volume the model sees: "volume" (all of its
    #: evenly spaced slices) or "native" (those nearest the acquired slices)
    depth: str = "volume"

    def __post_init__(self) -> None:
        if not 32 <= self.size <= 512:
            raise ConfigError(f"model input size must be 32-512 pixels, got {self.size}")
        if not self.fov_mm > 0 or not self.window_high_hu > self.window_low_hu:
            raise ConfigError("model input needs a positive field of view and a window with "
                              f"high > low, got {self.fov_mm} mm, [{self.window_low_hu}, "
                              f"{self.window_high_hu}] HU")
        if self.depth not in ("volume", "native"):
            raise ConfigError(f"model input depth must be 'volume' or 'native', got "
                              f"{self.depth!r}")


@dataclass(frozen=True)
class ModelInput:
    """One volume ready for the model, and how to map its slices back."""

    array: np.ndarray  # float32 (size, size, D): rows, columns, slices (depth last)
    slice_index: np.ndarray  # (D,) volume slice index of each model slice
    slice_z_mm: np.ndarray  # (D,) z (mm, LPS superior) of each model slice
    decimation: int  # 1 unless the volume had more slices than max_len
    centre_mm: tuple[float, float]  # in-plane world point at the centre of the model grid
    pixel_mm: float  # model pixel size

    @property
    def depth(self) -> int:
        return int(self.array.shape[-1])

    def to_volume_slice(self, model_index: int | np.ndarray) -> np.ndarray:
        """Volume slice index of model slice index(es)."""
        return self.slice_index[np.asarray(model_index)]

    def to_z_mm(self, model_index: int | np.ndarray) -> np.ndarray:
        return self.slice_z_mm[np.asarray(model_index)]


def head_centre(volume: Volume, threshold_hu: float) -> tuple[float, float]:
    """In-plane world (x, y) centroid of the head, from a coarse look at every 4th voxel."""
    sub = volume.array[::2, ::4, ::4] > threshold_hu
    if not sub.any():
        c = volume.grid.world((volume.grid.shape[2] - 1) / 2, (volume.grid.shape[1] - 1) / 2, 0)
        return float(c[0]), float(c[1])
    k, j, i = np.nonzero(sub)
    pts = volume.grid.world(i * 4.0, j * 4.0, k * 2.0)
    return float(pts[:, 0].mean()), float(pts[:, 1].mean())


def prepare(volume: Volume, config: ModelInputConfig = ModelInputConfig()) -> ModelInput:
    """The model input of one volume (see module docstring)."""
    grid = volume.grid
    nk = grid.shape[0]
    slices = np.arange(nk)
    native = volume.provenance.get("native_slice_index")
    if config.depth == "native" and volume.provenance.get("variable_spacing") and native:
        slices = np.unique(np.clip(np.rint(native), 0, nk - 1).astype(np.int64))
    decimation = max(1, -(-len(slices) // config.max_len))
    keep = slices[::decimation]
    cx, cy = head_centre(volume, config.head_threshold_hu)
    px = config.fov_mm / config.size
    # in-plane sampling positions (world) of the model grid, the same for every axial slice
    offs = (np.arange(config.size) - (config.size - 1) / 2) * px
    xx, yy = np.meshgrid(cx + offs, cy + offs)  # rows follow y, columns follow x
    z0 = grid.origin[2]
    src = grid.index(np.stack([xx, yy, np.full_like(xx, z0)], axis=-1))  # (S, S, 3) i, j, k
    # anti-alias: average-pool by the whole factor between model and volume pixels first
    sx, sy = grid.spacing[0], grid.spacing[1]
    pool = max(1, int(px / max(sx, sy)))
    import torch  # here, not at module level: Ray task processes that only pass configs on
    from torch.nn import functional as F  # to the isolated reader never load torch

    t = torch.from_numpy(np.ascontiguousarray(volume.array[keep]))[None]  # (1, D, H, W)
    if pool > 1:
        t = F.avg_pool2d(t, pool, stride=pool, ceil_mode=True)
    h, w = t.shape[-2:]
    gi = (src[..., 0] + 0.5) / pool - 0.5  # column index in the pooled image
    gj = (src[..., 1] + 0.5) / pool - 0.5
    norm = np.stack([(gi + 0.5) / w * 2 - 1, (gj + 0.5) / h * 2 - 1], axis=-1)
    sample = F.grid_sample(t - np.float32(-1024.0), torch.from_numpy(norm[None]).float(),
                           mode="bilinear", padding_mode="zeros", align_corners=False)
    hu = sample[0].numpy() + np.float32(-1024.0)  # outside the field of view: air
    lo, hi = config.window_low_hu, config.window_high_hu
    arr = np.clip((hu - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    return ModelInput(
        array=np.ascontiguousarray(np.moveaxis(arr, 0, -1)),  # (S, S, D)
        slice_index=keep, slice_z_mm=volume.slice_z_mm()[keep], decimation=decimation,
        centre_mm=(cx, cy), pixel_mm=px)
