"""`RunConfig`: what `cohort run` does, every value checked where it is made. The command
line (`cohort.cli.run`) takes its defaults from here; `cohort.pipeline` runs the job it
describes and records it (as plain values, no secrets) in the run's manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cohort.config import IndexConfig
from cohort.errors import ConfigError
from cohort.job.finish import QC_CHOICES
from cohort.job.resources import Request
from cohort.quantify import QuantifyConfig
from cohort.read.series import ReadConfig
from cohort.write.identity import IdentityConfig


@dataclass(frozen=True)
class RunConfig:
    """What `cohort run` does; every value is checked here."""

    model: str | None = None  # checkpoint path or URL; None: the shipped (synthetic) one
    masks: str | None = None  # folder of <SeriesInstanceUID>.nii.gz calcium masks
    #: without --masks, the calcium segmenter makes the masks: a checkpoint path or URL;
    #: None: the shipped (synthetic) one
    segmenter: str | None = None
    segment: bool = True  # False (--no-segmenter): landmarks only when no masks are given
    write_masks: bool = False  # the segmenter's masks as NIfTI on each series' grid
    gpus: int = 0  # inference actors with one GPU each; 0: CPU actors
    cpu_actors: int = 1  # inference actors when gpus == 0
    # CPUs Ray reserves per inference actor; None: 1 with GPUs, 0 on CPU-only clusters (the
    # actor is busy a fraction of the time and a reserved CPU would idle beside it)
    actor_cpus: float | None = None
    actor_threads: int = 1  # torch threads per inference actor
    batch_size: int = 4  # volumes per forward pass
    task_memory_gb: float = 3.0  # memory Ray reserves per CPU series task
    task_cpus: float = 1.0  # CPUs Ray reserves per CPU series task (< 1: more tasks per core)
    finish_tasks: int = 2  # concurrent finish tasks when that stage is light (finish_heavy)
    series_timeout_s: float = 600.0  # a series taking longer is cut off (error: timeout)
    retry_failed: bool = False  # process again series whose last published row is an error
    qc: str = "flagged"  # QC pictures for: flagged | all | none
    qc_series: tuple[str, ...] = ()  # series keys or UIDs that get a picture in any case
    label_maps: bool = False  # NIfTI segment label maps (needs --masks)
    #: a DICOM SEG + SR (TID 1500) per series with volumes, under dicom/<series>/
    dicom_seg: bool = False
    #: push the run's SEG and SR to this DICOMweb root after publishing (STOW-RS)
    dicomweb: str | None = None
    #: a missing or unusable mask: "note" (landmarks kept, volumes not computed, mask_*
    #: code on the row) or "error" (an error row, as for a failed image)
    mask_problems: str = "note"
    part_rows: int = 500  # series per Parquet part file
    #: a part is written at least this often while rows arrive (seconds): a driver killed
    #: midway loses at most this much finished work (the next run keeps the parts written)
    part_seconds: float = 300.0
    progress_every: int = 50  # off a terminal, one progress log line per this many series
    max_series: int | None = None  # process at most this many (a trial run)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    quantify: QuantifyConfig = field(default_factory=QuantifyConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    read: ReadConfig = field(default_factory=ReadConfig)

    @property
    def segmenting(self) -> bool:
        """Whether the calcium segmenter runs (no external masks, not switched off)."""
        return self.segment and not self.masks

    @property
    def resource_request(self) -> Request:
        """What the job asks of Ray, for the preflight check."""
        return Request(task_cpus=self.task_cpus, task_memory_gb=self.task_memory_gb,
                       actors=self.gpus or self.cpu_actors, actor_gpus=1 if self.gpus else 0,
                       actor_cpus=self.reserved_actor_cpus)

    @property
    def reserved_actor_cpus(self) -> float:
        """CPUs Ray reserves per inference actor (``actor_cpus``, or its default)."""
        if self.actor_cpus is not None:
            return self.actor_cpus
        return 1.0 if self.gpus else 0.0

    def __post_init__(self) -> None:
        if self.gpus < 0 or self.cpu_actors < 1:
            raise ConfigError(f"--gpus must be >= 0 and --cpu-actors >= 1, got {self.gpus} "
                              f"and {self.cpu_actors}")
        positive = {"--actor-threads": self.actor_threads, "--batch-size": self.batch_size,
                    "part_rows": self.part_rows, "part_seconds": self.part_seconds,
                    "--finish-tasks": self.finish_tasks,
                    "--timeout": self.series_timeout_s, "--task-memory": self.task_memory_gb,
                    "--task-cpus": self.task_cpus}
        bad = [f"{k} must be positive, got {v}" for k, v in positive.items() if not v > 0]
        if self.actor_cpus is not None and self.actor_cpus < 0:
            bad.append(f"--actor-cpus must be 0 or more, got {self.actor_cpus}")
        if bad:
            raise ConfigError("; ".join(bad))
        if self.qc not in QC_CHOICES:
            raise ConfigError(f"--qc must be one of {', '.join(QC_CHOICES)}, got {self.qc!r}")
        if self.mask_problems not in ("note", "error"):
            raise ConfigError(f"mask_problems must be 'note' or 'error', got "
                              f"{self.mask_problems!r}")
        if self.label_maps and not self.masks:
            raise ConfigError("--label-maps needs --masks: label maps label calcium voxels")
        if self.write_masks and (self.masks or not self.segment):
            raise ConfigError("--write-masks writes the segmenter's masks: it needs the "
                              "segmenter (no --masks, no --no-segmenter)")
        if self.dicomweb and not self.dicom_seg:
            raise ConfigError("--dicomweb pushes the run's DICOM SEG and SR: add --dicom-seg")
        if self.dicom_seg and not (self.masks or self.segment):
            raise ConfigError("--dicom-seg labels calcium voxels: it needs --masks or the "
                              "segmenter (not --no-segmenter)")
        if self.max_series is not None and self.max_series < 1:
            raise ConfigError(f"--max-series must be at least 1, got {self.max_series}")
