"""One Clean-CC-CCII scan's pixels: slice images or a preprocessed array -> a float volume
(H, W, D) in [0, 1], and its resizing to the model's input.

Slices: PNG or JPEG, any bit depth; colour images are converted to grey (ITU-R 601-2 luma,
as Pillow does); 8-bit values are divided by 255, 16-bit by 65535. Every slice of a scan
must have the same size.

Arrays (``.npy``, or ``.npz`` holding ``volume``, ``image``, ``data`` or a single array, and
optionally ``label``): 3-D, slices along the axis whose length differs from the two equal
in-plane ones (axis 0 when that is ambiguous, as ``np.stack`` of slice images gives).
Integer arrays are divided by their type's maximum; float arrays within [0, 1] are kept and
others are min-max scaled per scan. An ``npz`` ``label`` (class name or index) must agree
with the class folder.

Resizing (`resize`): trilinear (``torch.nn.functional.interpolate``, ``align_corners=False``)
to ``size x size`` in-plane and ``depth`` slices, the paper's 128 x 128 x 64 by default;
with ``depth=None`` the native depth is kept (in-plane resizing only), and a scan deeper
than ``max_len`` keeps every f-th slice, f the smallest whole factor that fits.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.nn import functional as F

from cohort.ccccii.layout import ScanSource
from cohort.errors import ErrorCode, SeriesError
from cohort.storage import StorageOptions, read_bytes

ARRAY_KEYS = ("volume", "image", "data")


def read_slice(data: bytes, uri: str, scan: str) -> np.ndarray:
    """One slice image (H, W) as float32 in [0, 1].

    Raises:
        SeriesError: NOT_IMAGE when the bytes are no image Pillow can read.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(img, dtype=np.float32) / 65535.0
            if img.mode in ("I", "F"):  # 32-bit: scale by the slice's range
                a = np.asarray(img, dtype=np.float32)
                return (a - a.min()) / max(float(np.ptp(a)), 1e-6)
            return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise SeriesError(
            ErrorCode.NOT_IMAGE,
            f"not a readable PNG/JPEG image ({e}); replace or remove the file",
            series=scan,
            uri=uri,
        ) from e


def read_scan(source: ScanSource, options: StorageOptions | None = None) -> np.ndarray:
    """The scan as float32 (H, W, D) in [0, 1] (see module).

    Raises:
        SeriesError: a slice is no image (NOT_IMAGE), slices differ in size
            (INCONSISTENT_GEOMETRY), an array is not 3-D or unreadable (DECODE_FAILED), or
            an array's own label disagrees with its class folder (LABEL_MISMATCH).
    """
    if source.kind == "array":
        return _read_array(source, options)
    slices = []
    for uri in source.files:
        s = read_slice(read_bytes(uri, options), uri, source.scan_key)
        if slices and s.shape != slices[0].shape:
            raise SeriesError(
                ErrorCode.INCONSISTENT_GEOMETRY,
                f"slice of {s.shape[0]} x "
                f"{s.shape[1]} pixels in a scan whose first slice has "
                f"{slices[0].shape[0]} x {slices[0].shape[1]}; every slice of a "
                "scan must have one size",
                series=source.scan_key,
                uri=uri,
            )
        slices.append(s)
    return np.stack(slices, axis=-1)


def _read_array(source: ScanSource, options: StorageOptions | None) -> np.ndarray:
    uri = source.files[0]
    label = None
    try:
        loaded = np.load(io.BytesIO(read_bytes(uri, options)), allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            keys = list(loaded.keys())
            if "label" in keys:
                label = loaded["label"].item()
            arrays = [k for k in keys if k != "label"]
            key = next(
                (k for k in ARRAY_KEYS if k in keys), arrays[0] if len(arrays) == 1 else None
            )
            if key is None:
                raise ValueError(
                    f"npz with arrays {keys}: name the volume one of {', '.join(ARRAY_KEYS)}"
                )
            loaded = loaded[key]
        a = np.asarray(loaded)
    except (ValueError, OSError, EOFError) as e:
        raise SeriesError(
            ErrorCode.DECODE_FAILED,
            f"cannot read the scan array: {e}",
            series=source.scan_key,
            uri=uri,
        ) from e
    if a.ndim != 3:
        raise SeriesError(
            ErrorCode.DECODE_FAILED,
            f"a scan array must be 3-D, this one has shape {a.shape}",
            series=source.scan_key,
            uri=uri,
        )
    if label is not None and label not in (source.label, source.class_name):
        raise SeriesError(
            ErrorCode.LABEL_MISMATCH,
            f"the array's label {label!r} differs "
            f"from its class folder {source.class_name}; move the file or fix "
            "its label",
            series=source.scan_key,
            uri=uri,
        )
    if a.shape[0] == a.shape[1] != a.shape[2]:
        volume = a  # (H, W, D) already
    else:
        volume = np.moveaxis(a, 0, -1)  # (D, H, W) -> (H, W, D)
    return _unit_range(volume)


def _unit_range(a: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        lo = info.min if info.min < 0 else 0
        return ((a.astype(np.float32) - lo) / float(info.max - lo)).astype(np.float32)
    a = a.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0 and hi <= 1:
        return a
    return (a - lo) / max(hi - lo, 1e-6)


def resize(volume: np.ndarray, size: int, depth: int | None, max_len: int = 512) -> np.ndarray:
    """(H, W, D) -> (size, size, depth) by trilinear interpolation; ``depth=None`` keeps the
    native depth (every f-th slice beyond ``max_len``, see module)."""
    d = volume.shape[-1]
    if depth is None:
        step = math.ceil(d / max_len)
        volume = volume[..., ::step]
        depth = volume.shape[-1]
    x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)).permute(2, 0, 1)
    out = F.interpolate(
        x[None, None], size=(depth, size, size), mode="trilinear", align_corners=False
    )  # (1, 1, D', size, size)
    return out[0, 0].permute(1, 2, 0).clamp(0, 1).numpy()
