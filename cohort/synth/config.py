"""`SynthConfig`: what `cohort synth heads` generates (checked on creation)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from cohort.errors import ConfigError
from cohort.synth.acquisition import THICKNESSES_MM, TRANSFER_SYNTAXES


def _probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a probability between 0 and 1, got {value}")


@dataclass(frozen=True)
class SynthConfig:
    """What `cohort synth heads` generates."""

    patients: int = 20
    seed: int = 0
    matrix: int = 512  # in-plane pixels (rows = columns); 512 as on scanners, less for tests
    thicknesses_mm: tuple[float, ...] = THICKNESSES_MM  # drawn per series
    pixel_spacing_mm: tuple[float, float] = (0.4, 0.5)  # range at 512 x 512
    tilt_p: float = 0.1  # gantry-tilted primary series
    #: primary series acquired as a sequential head protocol of two contiguous blocks:
    #: thin slices through the posterior fossa, thicker ones above (STEPPED_BLOCKS_MM)
    stepped_p: float = 0.0
    localizer_p: float = 0.3  # a scout image in the study
    second_series_p: float = 0.3  # a bone-kernel or thick reconstruction beside the primary
    followup_p: float = 0.2  # a second study of the same patient, later
    neck_cut_p: float = 0.25  # field of view ends just below the skull base
    calcium_free_p: float = 0.2  # subjects without any ICA calcification
    metal_p: float = 0.15  # subjects with dental fillings (metal streaks at the teeth)
    motion_p: float = 0.05  # scans where the head moved (doubled edges in some slices)
    holder_p: float = 0.9  # scans with a head holder behind the head
    transfer_syntax: str = "explicit"  # or "mixed", or one of TRANSFER_SYNTAXES
    render_scale: int = 2  # anatomy evaluated at this many pixels, then interpolated
    workers: int = 0  # processes; 0 = one per CPU

    def __post_init__(self) -> None:
        if self.patients < 1:
            raise ConfigError(f"--patients must be at least 1, got {self.patients}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be a non-negative integer, got {self.seed}")
        if not 32 <= self.matrix <= 1024:
            raise ConfigError(f"--matrix must be between 32 and 1024 pixels, got {self.matrix}")
        if not self.thicknesses_mm or any(not 0.5 <= t <= 10 for t in self.thicknesses_mm):
            raise ConfigError(f"slice thicknesses must lie in 0.5-10 mm, got {self.thicknesses_mm}")
        lo, hi = self.pixel_spacing_mm
        if not 0.2 <= lo <= hi <= 1.0:
            raise ConfigError(f"pixel spacing range must lie in 0.2-1.0 mm at 512 x 512, "
                              f"got {self.pixel_spacing_mm}")
        for name in ("tilt_p", "stepped_p", "localizer_p", "second_series_p", "followup_p",
                     "neck_cut_p", "calcium_free_p", "metal_p", "motion_p", "holder_p"):
            _probability(name.replace("_p", "").replace("_", "-"), getattr(self, name))
        if self.transfer_syntax not in (*TRANSFER_SYNTAXES, "mixed"):
            raise ConfigError(f"unknown transfer syntax {self.transfer_syntax!r}; use one of "
                              f"{', '.join(TRANSFER_SYNTAXES)} or mixed")
        if self.render_scale not in (1, 2, 4):
            raise ConfigError(f"render scale must be 1, 2 or 4, got {self.render_scale}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be 0 (one per CPU) or more, got {self.workers}")

    @property
    def effective_workers(self) -> int:
        return min(self.patients, self.workers or (os.cpu_count() or 1))
