"""`ReportConfig`: how `cohort report` draws the cohort (sizes, caps), defined once."""

from __future__ import annotations

from dataclasses import dataclass

from cohort.errors import ConfigError


@dataclass(frozen=True)
class ReportConfig:
    """What the report draws and how large.

    The caps keep a report of thousands of series readable and light; the tables behind it
    hold everything (`cohort query`), and the report says when it shows a part.
    """

    dpi: int = 100  # figures are drawn 11.5 inches wide: 1150 pixels at 100 dpi
    qc_width_px: int = 1000  # QC pictures are copied at most this wide (aspect kept)
    max_gallery: int = 48  # flagged series shown as pictures, most flags first
    max_listed: int = 500  # flagged series listed in the gallery's table
    max_trajectories: int = 300  # patients drawn in the change-over-time figure
    #: the images are synthetic phantoms: the tables do not record it (only the models'
    #: ``trained_on`` is), so the caller says so (the demo does)
    synthetic_data: bool = False

    def __post_init__(self) -> None:
        for name in ("dpi", "qc_width_px", "max_gallery", "max_listed", "max_trajectories"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (1 if name != "max_gallery" else 0):
                raise ConfigError(f"ReportConfig.{name} must be a positive whole number, "
                                  f"got {value!r}")
        if not 30 <= self.dpi <= 400:
            raise ConfigError(f"ReportConfig.dpi must lie within 30-400, got {self.dpi}")
