"""Exception types and the per-series error taxonomy of `cohort`, one module for all.

Every message names the thing that failed (a URL, an option, a series, a file) and says
what would work instead. Error *codes* are short, stable strings: they are written into the
output tables (`error_code` columns), so users can count and filter failures by them. Never
rename a code; add new ones.
"""

from __future__ import annotations

from enum import StrEnum


class CohortError(Exception):
    """Base class of every error `cohort` raises on purpose."""


class ConfigError(CohortError, ValueError):
    """An option or configuration value is out of range or inconsistent."""


class StorageError(CohortError, OSError):
    """A URL cannot be read or written."""


class ErrorCode(StrEnum):
    """Why a file or a series could not be used. The value is what the tables carry."""

    # one object (file) in the archive
    NOT_DICOM = "not_dicom"  # no DICOM preamble/prefix and no parsable data set
    DICOMDIR = "dicomdir"  # a media directory, not an image
    NOT_IMAGE = "not_image"  # a DICOM object without pixels (report, presentation state...)
    TRUNCATED = "truncated"  # the file ends before its declared content
    UNREADABLE_HEADER = "unreadable_header"  # the data set cannot be parsed
    NO_PIXEL_DATA = "no_pixel_data"  # an image object whose PixelData is missing
    UNSUPPORTED_COMPRESSION = "unsupported_compression"  # pixels in a vendor's private element
    IO_ERROR = "io_error"  # storage could not deliver the object
    # one series
    NOT_CT = "not_ct"
    LOCALIZER = "localizer"
    DERIVED = "derived"  # derived / secondary capture / screenshot images
    COLOR = "color"  # more than one sample per pixel (e.g. RGB screenshots)
    MULTIFRAME = "multiframe"  # enhanced multi-frame objects are not read yet
    NOT_AXIAL = "not_axial"  # coronal/sagittal/oblique stacks
    TOO_FEW_SLICES = "too_few_slices"
    MISSING_SLICES = "missing_slices"  # gaps beyond the tolerance
    DUPLICATE_SLICES = "duplicate_slices"  # same position, different pixels
    MIXED_ORIENTATION = "mixed_orientation"
    INCONSISTENT_GEOMETRY = "inconsistent_geometry"  # rows/columns/spacing differ in a stack
    SIZE_MISMATCH = "size_mismatch"  # declared image size does not match the pixel data
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported_transfer_syntax"
    DECODE_FAILED = "decode_failed"
    DECODER_CRASHED = "decoder_crashed"  # the decoding process died (segfault, recursion)
    TIMEOUT = "timeout"  # the series exceeded its time limit
    OVERSIZED = "oversized"  # more voxels or bytes than the configured limit
    NO_SKULL = "no_skull"  # hemisphere separation found no skull in the volume
    INVALID_NIFTI = "invalid_nifti"
    MASK_MISMATCH = "mask_mismatch"  # an external mask whose geometry differs from the volume
    MASK_MISSING = "mask_missing"  # --masks was given but holds no <SeriesInstanceUID>.nii.gz
    PROCESSING_FAILED = "processing_failed"  # an unexpected error in a stage (a bug: report it)
    # the Clean-CC-CCII folder tree (cohort.ccccii.layout)
    UNKNOWN_CLASS = "unknown_class"  # a top folder that is not NCP, CP or Normal
    EMPTY_FOLDER = "empty_folder"  # a class or patient folder without any usable scan
    MISPLACED_FILE = "misplaced_file"  # a file or folder where the layout has none
    UNORDERED_SLICES = "unordered_slices"  # slice names without (or with equal) numbers
    LABEL_MISMATCH = "label_mismatch"  # an array's own label differs from its class folder


class SeriesError(CohortError):
    """A file or series cannot be used; carries its code, and what failed where.

    Args:
        code: the stable error code.
        message: what went wrong and, where it helps, what would work.
        series: the SeriesInstanceUID (or another name of the series), if known.
        uri: the file or object that failed, if one did.
    """

    def __init__(self, code: ErrorCode, message: str, *, series: str | None = None,
                 uri: str | None = None):
        self.code = ErrorCode(code)
        self.series = series
        self.uri = uri
        where = []
        if series:
            where.append(f"series {series}")
        if uri:
            where.append(f"file {uri}")
        prefix = f"[{self.code.value}] " + (", ".join(where) + ": " if where else "")
        super().__init__(prefix + message)
        self.detail = message
