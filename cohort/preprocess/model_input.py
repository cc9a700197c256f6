"""From a HU `Volume` to the DST's input: intensity window, in-plane resampling to the
model's grid, depth kept at the native slice positions.

The paper insists on full depth resolution, so slices are never interpolated along depth.
The one exception is explicit: a volume with more slices than the model's ``max_len`` keeps
every f-th slice (f the smallest whole factor that fits), still at native positions, and
the mapping back to volume slices and z says so.

Where the model looks in-plane (``crop``): ``"head"`` centres the field of view on the whole
head's centroid (the first shipped models: 240 mm over 64 pixels, 3.75 mm each, with the
carotid canal one or two pixels wide); ``"skull_base"`` centres a smaller field of view on
the skull base, where all six landmarks lie (within about 40 mm of the midline and 35 mm
in front of the cranium's centre), so the same pixel count sees the anatomy 2-3x finer.
The skull-base centre is the centroid of the cranium (the slices whose head cross-section
is at least 80% of the largest: neck and face do not pull it), moved ``anterior_mm``
forward, along the patient's anterior (-y in LPS).

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

CROPS = ("head", "skull_base")


@dataclass(frozen=True)
class ModelInputConfig:
    size: int = 128  # model pixels per side (in-plane)
    fov_mm: float = 240.0  # physical field of view the model sees
    crop: str = "head"  # where the field of view is centred: "head" or "skull_base"
    anterior_mm: float = 12.0  # "skull_base": centre this far in front of the cranium's
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
        if self.crop not in CROPS:
            raise ConfigError(f"model input crop must be one of {', '.join(CROPS)}, got "
                              f"{self.crop!r}")
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


def cranium_centre(volume: Volume, threshold_hu: float) -> tuple[float, float]:
    """In-plane world (x, y) centroid of the cranium: the head voxels of the slices whose
    head cross-section is at least 80% of the largest one (every 4th voxel in-plane)."""
    sub = volume.array[:, ::4, ::4] > threshold_hu
    area = sub.sum(axis=(1, 2))
    if not area.any():
        return head_centre(volume, threshold_hu)
    big = np.nonzero(area >= 0.8 * area.max())[0]
    k, j, i = np.nonzero(sub[big])
    pts = volume.grid.world(i * 4.0, j * 4.0, big[k].astype(float))
    return float(pts[:, 0].mean()), float(pts[:, 1].mean())


def field_centre(volume: Volume, config: ModelInputConfig) -> tuple[float, float]:
    """The in-plane world point at the centre of the model's field of view (see module)."""
    if config.crop == "skull_base":
        cx, cy = cranium_centre(volume, config.head_threshold_hu)
        return cx, cy - config.anterior_mm  # LPS: anterior is -y
    return head_centre(volume, config.head_threshold_hu)


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
    cx, cy = field_centre(volume, config)
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

    # every slice, or every n-th: a view (copying a 512 x 512 volume was a third of this
    # function's time); the native slices of a stepped stack: a copy of those
    regular = len(slices) == nk
    chosen = volume.array[::decimation] if regular else volume.array[keep]
    t = torch.from_numpy(chosen)[None]  # (1, D, H, W)
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
