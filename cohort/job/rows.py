"""The rows of `cohort run`: one per manifest series, with identifiers pseudonymised and
missing header values as nulls; archive paths (which often hold patient IDs) kept out of
outputs and messages unless the user keeps identifiers."""

from __future__ import annotations

import pandas as pd

from cohort.storage import redact
from cohort.write.identity import IdentityConfig, pseudonym


def plain(value):
    """numpy values (as Ray hands rows back) -> plain Python values."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and value != value:  # NaN from pandas -> null
        return None
    if value is pd.NA or value is pd.NaT:  # pandas' own missing values -> null
        return None
    return value


def _source_uri(files, identity: IdentityConfig) -> str | None:
    """The folder of the series' files; only with ``keep_ids``, because archive paths often
    hold patient IDs or names (``<root>/<PatientID>/<date>/...``)."""
    if files is None or len(files) == 0 or identity.salt:
        return None
    first = str(files[0])
    return redact(first.rsplit("/", 1)[0] if "/" in first else first)


def text_value(value) -> str | None:
    """A manifest text value as written: None for a missing one (None, NaN from pandas, or
    an empty type-2 DICOM tag), else the string."""
    value = plain(value)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def manifest_fields(r, identity: IdentityConfig) -> dict:
    """What every row of a series takes from its manifest row, whether processed or not:
    keys, pseudonyms and the header values, with missing values as nulls (never NaN, which
    would give a column two types)."""
    return {
        "series_key": r.series_key, "series_uid": r.series_uid,
        "study_key": pseudonym(text_value(r.study_uid), identity),
        "patient_key": pseudonym(text_value(r.patient_id), identity),
        "source_uri": _source_uri(r.files, identity),
        "study_date": text_value(r.study_date), "manufacturer": text_value(r.manufacturer),
        "scanner_model": text_value(r.model), "kernel": text_value(r.kernel),
        "n_files": int(r.n_files), "slice_thickness_mm": plain(r.slice_thickness_mm),
    }


def input_rows(selected: pd.DataFrame, common: dict, identity: IdentityConfig) -> list[dict]:
    """The rows the job streams, one per selected manifest row: ``common`` values (run id,
    model), the manifest's fields with keys pseudonymised, the files, status "ok"."""
    return [{**common, **manifest_fields(r, identity), "status": "ok",
             "files": [str(f) for f in r.files],
             "scrub": folders_of(r.files) if identity.salt else []}
            for r in selected.itertuples(index=False)]


def folders_of(files) -> list[str]:
    """The folders of a series' files, longest first (replaced in error messages)."""
    folders = {str(f).rsplit("/", 1)[0] for f in files if "/" in str(f)}
    return sorted(folders | {redact(f) for f in folders}, key=len, reverse=True)


def scrub(text: str | None, folders: list[str]) -> str | None:
    """``text`` with archive paths (which may hold patient IDs) replaced."""
    if not text:
        return text
    for folder in folders:
        text = text.replace(folder, "<series folder>")
    return text


def not_processed_row(r, common: dict, identity: IdentityConfig) -> dict:
    """A manifest row the index did not select (skipped) or could not read (error)."""
    folders = folders_of(r.files) if identity.salt else []
    return {**common, **manifest_fields(r, identity),
            "status": "skipped" if r.status == "not_selected" else "error",
            "error_code": text_value(r.error_code),
            "error_detail": scrub(text_value(r.error_detail), folders)}
