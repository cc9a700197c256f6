"""Frozen configuration dataclasses, one per stage. Command-line parsing lives in cli.py;
every value is checked here, with a message that says what would work."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from cohort.errors import ConfigError
from cohort.read.stack import StackRules
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
                     "neck_cut_p", "calcium_free_p"):
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


# --- discovery and series selection (`cohort index`) --------------------------------------

#: Reconstruction kernels for bone (sharp) images, as case-insensitive regular expressions
#: matched against the whole first value of ConvolutionKernel. Kernels in neither list rank
#: between soft and bone. Extend them in `SelectionConfig` (or with --soft-kernel /
#: --bone-kernel) for scanners not listed.
BONE_KERNELS: tuple[str, ...] = (
    # GE
    "BONE", "BONEPLUS", "LUNG", "EDGE", "DETAIL",
    # Siemens (classic H/B kernels 60 and above, J and Hr/Br/Qr kernels of the Force era)
    r"[HBC][6-9]\d[a-z]?", r"J[6-9]\d[a-z]?", r"[HBQ]r[6-9]\d[a-z]?(\s.*)?",
    # Philips
    "YA", "YB", "YC", "YD", "YE", "YF", "D", "E", "L",
    # Toshiba / Canon
    "FC30", "FC31", "FC35", "FC8[0-9]", "FC5[0-9]",
)
#: Soft-tissue and brain kernels, matched the same way.
SOFT_KERNELS: tuple[str, ...] = (
    # GE
    "STANDARD", "SOFT", "STND",
    # Siemens
    r"[HBC][1-4]\d[a-z]?", r"J[1-4]\d[a-z]?", r"[HBQ]r[1-4]\d[a-z]?(\s.*)?",
    # Philips
    "UA", "UB", "UC", "UD", "EA", "EB", "EC", "A", "B",
    # Toshiba / Canon
    "FC1[0-9]", "FC2[0-9]", "FC6[0-9]",
)
#: Criteria `prefer` may name, best first within each criterion.
PREFERENCES = ("soft_kernel", "full_coverage", "thin_slices", "more_coverage")
EXECUTORS = ("ray", "local")


@dataclass(frozen=True)
class SelectionConfig:
    """Which series of a study `cohort index` selects, and how it ranks the candidates.

    A candidate is a CT stack of original, primary, single-frame, grey-scale axial images
    (not a localizer) whose geometry passes `cohort.read.stack.check_stack`. Per study, the
    candidates are ranked by the criteria in `prefer`, in that order; ties go to the lower
    SeriesNumber. Every other series is reported with the reason it lost.
    """

    modalities: tuple[str, ...] = ("CT",)  # Modality values accepted
    allow_derived: bool = False  # True: DERIVED/SECONDARY images may be selected too
    soft_kernels: tuple[str, ...] = SOFT_KERNELS  # regexes: preferred kernels
    bone_kernels: tuple[str, ...] = BONE_KERNELS  # regexes: avoided kernels
    min_coverage_mm: float = 120.0  # z extent counted as full head coverage
    prefer: tuple[str, ...] = PREFERENCES  # ranking criteria, most important first

    def __post_init__(self) -> None:
        if not self.modalities:
            raise ConfigError("modalities must name at least one Modality, e.g. CT")
        for name in ("soft_kernels", "bone_kernels"):
            for pattern in getattr(self, name):
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise ConfigError(f"{name}: {pattern!r} is not a regular expression "
                                      f"({e}); give kernel names or patterns like H[1-4]\\d") \
                        from e
        if not 0 <= self.min_coverage_mm <= 2000:
            raise ConfigError(f"--min-coverage must lie in 0-2000 mm, got {self.min_coverage_mm}")
        unknown = [p for p in self.prefer if p not in PREFERENCES]
        if unknown or len(set(self.prefer)) != len(self.prefer):
            raise ConfigError(f"--prefer takes distinct criteria out of {', '.join(PREFERENCES)}; "
                              f"got {', '.join(self.prefer)}")


@dataclass(frozen=True)
class DiscoveryConfig:
    """How `cohort index` lists objects and reads their headers."""

    executor: str = "ray"  # "ray": Ray tasks (a local instance unless connected); "local"
    num_cpus: int = 0  # CPUs of a Ray instance started here; 0 = all of this machine's
    files_per_task: int = 256  # objects whose headers one task reads
    io_threads: int = 32  # concurrent reads inside a task (object storage is latency-bound)
    header_block_bytes: int = 64 * 1024  # first byte range read per object (then doubles)
    max_header_bytes: int = 64 * 1024**2  # a header longer than this is unreadable

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(f"unknown executor {self.executor!r}; use one of "
                              f"{', '.join(EXECUTORS)}")
        if self.num_cpus < 0:
            raise ConfigError(f"--num-cpus must be 0 (all) or more, got {self.num_cpus}")
        if not 1 <= self.files_per_task <= 100_000:
            raise ConfigError(f"--files-per-task must lie in 1-100000, got {self.files_per_task}")
        if not 1 <= self.io_threads <= 256:
            raise ConfigError(f"--io-threads must lie in 1-256, got {self.io_threads}")
        if not 512 <= self.header_block_bytes <= self.max_header_bytes:
            raise ConfigError(f"header block must lie in 512 bytes .. max_header_bytes "
                              f"({self.max_header_bytes}), got {self.header_block_bytes}")


@dataclass(frozen=True)
class IndexConfig:
    """Everything `cohort index` needs: discovery, geometry tolerances, series selection."""

    discovery: DiscoveryConfig = DiscoveryConfig()
    stack: StackRules = StackRules()  # the reader's geometry tolerances, shared
    selection: SelectionConfig = SelectionConfig()
