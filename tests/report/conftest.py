"""The run output the report tests share (`tests.report.helpers`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.report.helpers import publish_cohort


@pytest.fixture(scope="session")
def run_output(tmp_path_factory) -> str:
    """The published output of the module docstring in a local folder."""
    return publish_cohort(str(tmp_path_factory.mktemp("report") / "out"))


@pytest.fixture(scope="session")
def report(run_output) -> tuple[Path, str]:
    """The report of `run_output`, where `cohort report` writes it: its page and its text."""
    from cohort.report import write_report

    url = Path(write_report(run_output))
    return url, url.read_text(encoding="utf-8")
