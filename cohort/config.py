"""Frozen configuration of `cohort index` (discovery, selection, the stack rules it uses);
every value is checked here, with a message that says what would work. Other stages keep
their configuration beside them (`SynthConfig` in `cohort.synth.config`, `RunConfig` in
`cohort.job.config`, `QuantifyConfig` in `cohort.quantify.config`, `TrainConfig` and
`StudyConfig` in `cohort.train`); the command line (`cohort.cli`) takes its defaults from
them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cohort.errors import ConfigError
from cohort.read.stack import StackRules

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
    list_page_objects: int = 1000  # objects per listing page (S3 pages 1000 keys per request)
    # objects whose header rows one grouping task holds: the driver never holds them, and
    # an archive of N objects is grouped and selected in ceil(N / this) tasks
    objects_per_group_task: int = 20_000

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
        if not 1 <= self.list_page_objects <= 100_000:
            raise ConfigError(f"list_page_objects must lie in 1-100000, got "
                              f"{self.list_page_objects}")
        if self.objects_per_group_task < 1:
            raise ConfigError(f"objects_per_group_task must be 1 or more, got "
                              f"{self.objects_per_group_task}")
        if not 512 <= self.header_block_bytes <= self.max_header_bytes:
            raise ConfigError(f"header block must lie in 512 bytes .. max_header_bytes "
                              f"({self.max_header_bytes}), got {self.header_block_bytes}")


@dataclass(frozen=True)
class IndexConfig:
    """Everything `cohort index` needs: discovery, geometry tolerances, series selection."""

    discovery: DiscoveryConfig = DiscoveryConfig()
    stack: StackRules = StackRules()  # the reader's geometry tolerances, shared
    selection: SelectionConfig = SelectionConfig()
