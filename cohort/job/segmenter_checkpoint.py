"""Which calcium segmenter the job uses, and what its checkpoint says about itself.

With no ``--segmenter``, the job uses the one shipped in the package (trained on SYNTHETIC
phantoms by `cohort train shipped-segmenter`; not for clinical use). External masks
(``--masks``) always win: the segmenter then does not run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from cohort.errors import ConfigError
from cohort.job.checkpoint import local_copy
from cohort.preprocess.arterial_crop import CropConfig
from cohort.storage import StorageOptions, redact
from cohort.train.seg_metrics import interval_thresholds

SHIPPED_SEGMENTER = "segmenter-default-synthetic.pt"

VALID_SEGMENTERS = ("give a checkpoint written by `cohort train segmenter --data URL --out DIR` "
                    "(DIR/models/vit-fold-<f>.pt) or `cohort train shipped-segmenter`, leave "
                    "--segmenter out to use the shipped one, or give --masks")


def shipped_segmenter() -> str:
    return str(resources.files("cohort.model") / "weights" / SHIPPED_SEGMENTER)


@dataclass(frozen=True)
class SegmenterInfo:
    """What the rows and the run manifest say about the segmenter."""

    path: str
    source: str  # what the user gave (redacted), or "shipped"
    name: str
    sha256: str
    trained_on: str
    temperature: float  # voxel logits are divided by it (1: not calibrated)
    threshold: float  # calibrated probability at or above which a voxel is calcium
    level: float  # of the volume intervals
    #: probabilities at or above which a voxel is in the interval's lower / upper volume
    #: (fitted on validation; older checkpoints: read off the level)
    bounds: tuple[float, float]
    crop: CropConfig
    #: the second stage that keeps or drops each candidate component of the probability
    #: map (`cohort.model.component_filter`, ``TreeEnsemble.to_dict``); None: the mask is
    #: the voxels at or above ``threshold``
    component_filter: dict | None = None
    #: the in-plane pixel sizes (mm) of the series it was trained on; None: not recorded
    trained_pixel_mm: tuple[float, float] | None = None

    #: how far outside ``trained_pixel_mm`` (as a factor) a series' pixels may lie before
    #: its volumes are flagged
    PIXEL_MARGIN = 1.25

    def spacing_note(self, pixel_mm: float) -> str | None:
        """Why the volumes of a series with ``pixel_mm`` pixels may be wrong, or None."""
        if self.trained_pixel_mm is None:
            return None
        lo, hi = self.trained_pixel_mm
        if lo / self.PIXEL_MARGIN <= pixel_mm <= hi * self.PIXEL_MARGIN:
            return None
        return (f"in-plane pixels of {pixel_mm:.2f} mm, outside the {lo:.2f}-{hi:.2f} mm the "
                f"calcium segmenter was trained on: its volumes may be far off (pass --masks, "
                f"or a segmenter trained at this resolution)")

    @property
    def mask_source(self) -> str:
        """The rows' ``mask_source``: model name and checksum."""
        return f"segmenter {self.name} sha256:{self.sha256[:12]}"


def describe_segmenter(url: str | None, options: StorageOptions | None = None
                       ) -> SegmenterInfo:
    """Load the checkpoint once (weights only) to check and describe it.

    Raises:
        ConfigError: missing, not a segmenter checkpoint, or not calibrated.
    """
    from cohort.model.zoo import load_checkpoint

    source = "shipped" if url is None else redact(url)
    try:
        path = local_copy(url or shipped_segmenter(), options)
    except ConfigError:
        raise ConfigError(f"segmenter checkpoint {source} does not exist; {VALID_SEGMENTERS}"
                          ) from None
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    try:
        net, meta = load_checkpoint(path)
    except ConfigError as e:
        raise ConfigError(f"{str(e).replace(path, source)}; {VALID_SEGMENTERS}") from None
    if not hasattr(net, "cfg") or not hasattr(net.cfg, "window"):
        raise ConfigError(f"{source} is a landmark or classification checkpoint, not a "
                          f"calcium segmenter; {VALID_SEGMENTERS}")
    cal = meta.get("calibration") or {}
    if "threshold" not in cal:
        raise ConfigError(f"segmenter {source} carries no calibration (temperature and "
                          "threshold fitted on a validation split); train it with `cohort "
                          "train segmenter`, which fits both")
    crop = CropConfig(**meta["crop"]) if meta.get("crop") else CropConfig()
    component_filter = meta.get("component_filter")
    if component_filter is not None:
        from cohort.model.component_filter import TreeEnsemble

        try:
            TreeEnsemble.from_dict(component_filter)
        except (ConfigError, KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"segmenter {source} carries a component filter this version "
                              f"cannot use: {e}") from None
    name = net.cfg.name if net.cfg.name.startswith("unet") else f"vit-{net.cfg.name}"
    level = float(cal.get("level", 0.9))
    return SegmenterInfo(path=path, source=source, name=name,
                         sha256=sha, trained_on="synthetic phantoms" if meta.get("synthetic")
                         else str(meta.get("trained_on", "unknown")),
                         temperature=float(cal.get("temperature", 1.0)),
                         threshold=float(cal["threshold"]), level=level,
                         bounds=tuple(float(b) for b in cal.get(
                             "interval_thresholds", interval_thresholds(level))),
                         crop=crop, component_filter=component_filter,
                         trained_pixel_mm=_pixel_range(meta.get("trained_pixel_mm")))


def _pixel_range(value) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"a segmenter's trained_pixel_mm must be [low, high] in mm, not "
                          f"{value!r}") from None
    return lo, hi
