"""What made a series' results, as the SEG and SR state it."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import generate_uid


@dataclass(frozen=True)
class Provenance:
    """The models and code behind one series' results (from its row of the series table)."""

    run_id: str
    model_name: str  # the landmark model (DST)
    model_sha256: str
    model_trained_on: str  # e.g. "synthetic phantoms"
    mask_source: str  # "external" or "segmenter <name> sha256:<12 hex>"
    code_version: str
    synthetic_data: bool = False  # the source images say they are synthetic phantoms

    @property
    def synthetic(self) -> bool:
        """Whether the results must say SYNTHETIC: synthetic images or a synthetic model."""
        return self.synthetic_data or "synthetic" in self.model_trained_on.lower() or \
            "synthetic" in self.mask_source.lower()

    @property
    def model_checksum(self) -> str:
        return f"sha256:{self.model_sha256[:12]}"

    def description(self, what: str) -> str:
        """A SeriesDescription (LO, 64 characters at most)."""
        text = f"{'SYNTHETIC ' if self.synthetic else ''}{what} cohort"
        return text[:64]

    def uid(self, series_uid: str, what: str) -> str:
        """A UID fixed by run, series and object: the same run exports the same UIDs."""
        return generate_uid(entropy_srcs=[self.run_id, series_uid, what])
