"""Fixtures of the DICOM export tests: a two-series synthetic cohort (one regular series,
one gantry-tilted one, both with calcium) and the external tools, which must be there."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort

#: seed 2 gives series 0 untilted and series 1 tilted 18.4 deg, both with calcium
EXPORT_COHORT = SynthConfig(patients=2, seed=2, matrix=96, thicknesses_mm=(2.5,), tilt_p=0.5,
                            localizer_p=0, second_series_p=0, followup_p=0, neck_cut_p=0,
                            calcium_free_p=0, metal_p=0, motion_p=0, holder_p=0, workers=1,
                            render_scale=1)


def require_tool(name: str, package: str) -> str:
    """The tool's path; fails (not skips) with how to install it when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: the DICOM export tests need it. Install the "
                    f"Debian package: apt-get install -y {package} (./run tests does that "
                    "when it runs as root with apt-get)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def export_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("export") / "cohort"
    generate_cohort(EXPORT_COHORT, str(out))
    truth = pd.read_parquet(out / "ground_truth.parquet")
    assert truth["gantry_tilt_deg"].abs().tolist()[0] == 0.0, "fixture: series 0 untilted"
    assert abs(truth["gantry_tilt_deg"].tolist()[1]) > 10, "fixture: series 1 tilted"
    return out, truth


@pytest.fixture(scope="session")
def dciodvfy() -> str:
    return require_tool("dciodvfy", "dicom3tools")
