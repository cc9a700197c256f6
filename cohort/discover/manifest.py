"""The manifest: one row per series (stack) and one per unusable object, as Parquet.

Layout under the output URL (a folder or a prefix):

    manifest.parquet    MANIFEST schema (cohort.schemas): what to analyse, what not, and why
    objects.parquet     OBJECTS schema: every listed object's header fields or error code
    _SUCCESS.json       written last: counts, input, version; the manifest is complete

Both tables are written atomically (a temporary name renamed into place on filesystems,
one PUT or one multipart upload on object stores) and the marker after them; an old marker
is removed first, so a reader never trusts a folder that is being rewritten. `cohort index`
writes them in pieces (`cohort.discover.staged`); `write_index` writes tables held whole.
"""

from __future__ import annotations

import io
import logging
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cohort.discover.headers import fit_integers
from cohort.errors import ErrorCode, StorageError
from cohort.schemas import MANIFEST
from cohort.storage import (
    StorageOptions,
    filesystem,
    is_published,
    join,
    publish_marker,
    read_bytes,
    redact,
    write_bytes,
)

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.parquet"
OBJECTS_FILE = "objects.parquet"
MARKER = "_SUCCESS.json"
STATUSES = ("selected", "not_selected", "failed")
#: object codes that say what an object is rather than that it is broken
NOT_SELECTED_OBJECT_CODES = frozenset({ErrorCode.NOT_DICOM.value, ErrorCode.DICOMDIR.value,
                                       ErrorCode.NOT_IMAGE.value})


def object_row(obj: dict) -> dict:
    """The manifest row of one unusable object (an OBJECTS row with an error code)."""
    code = obj["error_code"]
    row = dict.fromkeys(MANIFEST.names)
    row.update(
        kind="object", status="not_selected" if code in NOT_SELECTED_OBJECT_CODES else "failed",
        error_code=code, error_detail=obj["error_detail"], n_files=1,
        n_bytes=obj["size_bytes"], header_bytes_read=obj["bytes_read"], files=[obj["uri"]],
        notes=list(obj.get("notes") or []),
    )
    for column in ("patient_id", "study_uid", "series_uid", "series_number", "modality",
                   "sop_class_uid", "manufacturer", "model", "kernel", "series_description",
                   "study_date", "rows", "columns", "samples_per_pixel", "number_of_frames"):
        row[column] = obj[column]
    if obj["transfer_syntax_uid"]:
        row["transfer_syntax_uids"] = [obj["transfer_syntax_uid"]]
    return row


def manifest_table(rows: list[dict]) -> pa.Table:
    """``rows`` as a MANIFEST table: series by patient, study and SeriesNumber, then
    objects by URI (`annotate` first)."""
    return pa.Table.from_pylist(sorted(annotate(rows), key=manifest_order), schema=MANIFEST)


def annotate(rows: list[dict]) -> list[dict]:
    """``rows``, ready for the MANIFEST schema (changed in place).

    A series row without SeriesInstanceUID (its images have none; grouped by study,
    SeriesNumber and folder) gets the note ``no_series_uid``; an integer too large for its
    column is left empty with an ``out_of_range`` note rather than failing the table."""
    for r in rows:
        notes = fit_integers(r, MANIFEST)
        if r["kind"] == "series" and r["series_uid"] is None:
            notes.append(f"no_series_uid: its images have no SeriesInstanceUID; they were "
                         f"grouped by StudyInstanceUID, SeriesNumber and folder as "
                         f"{r['series_key']}")
        if notes:
            r["notes"] = [*(r["notes"] or []), *notes]
    return rows


def manifest_order(r: dict) -> tuple:
    """The sort key of a manifest row: series before objects, then by patient, study,
    SeriesNumber and key, objects by URI."""
    return (r["kind"] != "series", r["patient_id"] or "", r["study_uid"] or "",
            r["series_number"] is None, r["series_number"] or 0, r["series_key"] or "",
            r["files"][0] if r["files"] else "")


def counts(manifest: pa.Table) -> dict:
    """Rows by kind, by status, and by (status, error code)."""
    kinds = manifest["kind"].to_pylist()
    statuses = manifest["status"].to_pylist()
    codes = manifest["error_code"].to_pylist()
    by_code = Counter(f"{s}:{c}" for s, c in zip(statuses, codes, strict=True) if c)
    return {
        "rows": manifest.num_rows,
        "by_kind": dict(sorted(Counter(kinds).items())),
        "by_status": {s: statuses.count(s) for s in STATUSES},
        "by_status_and_code": dict(sorted(by_code.items())),
    }


def by_kind_counts(manifest: pa.Table) -> dict[str, dict]:
    """`counts` of all rows, of the series rows and of the object rows:
    ``{"all": ..., "series": ..., "object": ...}``."""
    kinds = manifest["kind"]
    return {"all": counts(manifest),
            "series": counts(manifest.filter(pc.equal(kinds, "series"))),
            "object": counts(manifest.filter(pc.equal(kinds, "object")))}


def add_counts(a: dict, b: dict) -> dict:
    """Two `counts` (or `by_kind_counts`) results added up, as if of one table."""
    if "rows" not in a:
        return {k: add_counts(a[k], b[k]) for k in a}
    out = {"rows": a["rows"] + b["rows"]}
    for key in ("by_kind", "by_status", "by_status_and_code"):
        total = Counter(a[key])
        total.update(b[key])
        out[key] = dict(sorted(total.items())) if key != "by_status" else {
            s: total[s] for s in STATUSES}
    return out


def write_index(out_url: str, manifest: pa.Table, objects: pa.Table, payload: dict,
                options: StorageOptions | None = None) -> str:
    """Write manifest.parquet and objects.parquet under ``out_url``, then the marker.

    Returns:
        The manifest's URL.

    Raises:
        StorageError: a file could not be written.
    """
    unpublish_index(out_url, options)
    manifest_url = join(out_url, MANIFEST_FILE)
    write_bytes(join(out_url, OBJECTS_FILE), _parquet(objects), options)
    write_bytes(manifest_url, _parquet(manifest), options)
    return publish_index(out_url, payload, options)


def unpublish_index(out_url: str, options: StorageOptions | None = None) -> None:
    """Remove the marker of an earlier index under ``out_url``, before its files are
    replaced: the folder must not look complete meanwhile.

    Raises:
        StorageError: the marker cannot be removed.
    """
    marker = join(out_url, MARKER)
    fs, marker_path = filesystem(marker, options)
    try:
        if fs.exists(marker_path):
            fs.rm_file(marker_path)
    except OSError as e:
        raise StorageError(f"cannot replace {redact(marker)}: {e}") from e


def publish_index(out_url: str, payload: dict, options: StorageOptions | None = None) -> str:
    """Write the marker that says manifest.parquet and objects.parquet under ``out_url``
    are complete; returns the manifest's URL."""
    manifest_url = join(out_url, MANIFEST_FILE)
    publish_marker(out_url, {**payload, "manifest": MANIFEST_FILE, "objects": OBJECTS_FILE,
                             "schema_version": MANIFEST.metadata[b"cohort.version"].decode()},
                   options, name=MARKER)
    logger.info("manifest written to %s", redact(manifest_url))
    return manifest_url


def read_manifest(out_url: str, options: StorageOptions | None = None) -> pa.Table:
    """The manifest written under ``out_url`` by `write_index`.

    Raises:
        StorageError: the folder holds no complete manifest (no marker).
    """
    if not is_published(out_url, options, name=MARKER):
        raise StorageError(f"{redact(out_url)} holds no complete manifest (no {MARKER}); run "
                           "`cohort index INPUT --out` to write one")
    return pq.read_table(io.BytesIO(read_bytes(join(out_url, MANIFEST_FILE), options)))


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()
