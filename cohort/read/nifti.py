"""NIfTI input (many research cohorts are stored that way) -> `Volume`."""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib

import SimpleITK as sitk

from cohort.errors import ErrorCode, SeriesError
from cohort.read.volume import Volume
from cohort.storage import StorageOptions, filesystem, is_local, read_bytes, redact


def _gunzip(data: bytes, url: str, series: str | None) -> bytes:
    """The file's content; a damaged or cut-short gzip stream is an error here (SimpleITK
    would read what is there and fill the rest, giving a wrong volume or mask silently)."""
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as e:
        raise SeriesError(ErrorCode.INVALID_NIFTI, f"its gzip stream is damaged or cut short "
                          f"({e}); copy or write the file again", series=series,
                          uri=redact(url)) from e


def read_nifti(url: str, options: StorageOptions | None = None, *,
               series: str | None = None) -> Volume:
    """Read a .nii or .nii.gz file from any URL as a HU volume (values as stored).

    Raises:
        SeriesError: INVALID_NIFTI (unreadable, not 3-D) or IO_ERROR.
    """
    name = os.path.basename(url.rstrip("/"))
    try:
        if is_local(url) and not name.endswith(".gz"):  # file:// and ~ resolved as elsewhere
            img = sitk.ReadImage(filesystem(url, options)[1])
        else:
            data = read_bytes(url, options)
            if name.endswith(".gz"):
                data = _gunzip(data, url, series)
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "volume.nii")
                with open(path, "wb") as f:
                    f.write(data)
                del data
                img = sitk.ReadImage(path)
    except RuntimeError as e:
        raise SeriesError(ErrorCode.INVALID_NIFTI, f"SimpleITK cannot read it: "
                          f"{str(e).strip().splitlines()[-1]}", series=series,
                          uri=redact(url)) from e
    except OSError as e:
        raise SeriesError(ErrorCode.IO_ERROR, str(e), series=series, uri=redact(url)) from e
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise SeriesError(ErrorCode.INVALID_NIFTI, f"{img.GetDimension()}-D image with "
                          f"{img.GetNumberOfComponentsPerPixel()} components; a 3-D scalar "
                          "volume is needed", series=series, uri=redact(url))
    series = series or name.removesuffix(".gz").removesuffix(".nii")
    return Volume.from_sitk(img, series_uid=series, provenance={"source": "nifti"})
