"""A small run output written as `cohort index` and `cohort run` publish theirs (the index's
`write_index`, the run's `RunWriter`), so that every count of the report is known in
advance, without running a job:

    index: 120 objects, 4 not images (3 not_dicom, 1 truncated); 13 series
      s01..s06, s05#2 is a stack key   selected, ok with volumes (patients A x2, B, C x2, D)
      s07                              selected, ok, calcium mask missing (no volumes)
      s08                              selected, failed in the run (retried in run 2)
      s09                              failed the index's checks (too_few_slices)
      s10, s11 localizer; s12 not_preferred
      s13                              selected, no row yet (--max-series)
"""

from __future__ import annotations

import io

import pyarrow as pa
from PIL import Image

from cohort.anatomy import LANDMARKS, SEGMENTS
from cohort.discover.manifest import manifest_table, write_index
from cohort.schemas import MANIFEST, OBJECTS
from cohort.storage import join, write_bytes
from cohort.write.runs import RunWriter, run_url

RUN1, RUN2 = "20260101T000000Z-aaaaaa", "20260201T000000Z-bbbbbb"
SCHEME = "none <= 0 < low <= 10 < moderate <= 100 < high (total mm^3; placeholder default)"
SEG = "segmenter tiny sha256:aaaaaaaaaaaa"
#: series key -> (manifest status, manifest code)
MANIFEST_ROWS = {
    "s01": ("selected", None), "s02": ("selected", None), "s03": ("selected", None),
    "s04": ("selected", None), "s05#2": ("selected", None), "s06": ("selected", None),
    "s07": ("selected", None), "s08": ("selected", None), "s09": ("failed", "too_few_slices"),
    "s10": ("not_selected", "localizer"), "s11": ("not_selected", "localizer"),
    "s12": ("not_selected", "not_preferred"), "s13": ("selected", None),
}
OBJECT_CODES = ("not_dicom", "not_dicom", "not_dicom", "truncated")
N_OBJECTS = 120


def _volumes(total: float) -> dict[str, float]:
    """``total`` spread over the segments: half cavernous, the rest elsewhere."""
    share = {"right_cavernous": 0.3, "left_cavernous": 0.2, "right_supraclinoid": 0.2,
             "left_petrous": 0.2, "right_cervical": 0.1}
    return {s: total * share.get(s, 0.0) for s in SEGMENTS}


def series_row(run_id: str, key: str, patient: str | None, date: str | None, *, status="ok",
         code=None, total: float | None = None, flags=(), low=(), picture=False,
         trained_on="synthetic phantoms") -> dict:
    row = {"run_id": run_id, "series_key": key, "series_uid": key.split("#")[0],
           "patient_key": patient, "study_key": f"{patient}-{date}" if patient else None,
           "study_date": date, "status": status, "error_code": code,
           "model_name": "tiny", "model_sha256": "d" * 64, "model_trained_on": trained_on,
           "code_version": "0.1.0+gtest"}
    if status != "ok":
        return row
    row.update({"volumes_computed": total is not None, "qc_flags": list(flags),
                "low_confidence_landmarks": list(low), "confidence_threshold": 0.3,
                "confidence_threshold_source": "model",
                "seconds_prepare": 2.0, "seconds_inference": 1.0, "seconds_quantify": 0.1})
    for i, name in enumerate(LANDMARKS):
        row[f"{name}_slice"] = 10 + i
        row[f"{name}_z_mm"] = 5.0 * i
        row[f"{name}_prob"] = 0.2 if name in low else 0.9 - 0.01 * i
    if total is not None:
        for name, v in _volumes(total).items():
            row[f"{name}_mm3"] = v
            row[f"{name}_mm3_low"], row[f"{name}_mm3_high"] = 0.5 * v, 1.5 * v
        group = ("none" if total <= 0 else "low" if total <= 10 else
                 "moderate" if total <= 100 else "high")
        row.update({"total_calcium_mm3": total, "total_calcium_mm3_low": 0.5 * total,
                    "total_calcium_mm3_high": 1.5 * total, "calcium_interval_level": 0.9,
                    "mask_source": SEG, "risk_group": group, "risk_scheme": SCHEME,
                    "seconds_segment": 3.0})
    if picture:
        row["qc_picture"] = f"qc/{key}.png"
    return row


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (600, 240), colour).save(buf, format="PNG")
    return buf.getvalue()


def run_payload(run_id: str, out_url: str, counts: dict, trained_on: str) -> dict:
    """A run manifest with the fields the report reads (as `cohort.pipeline` writes them)."""
    return {
        "what": "cohort run", "run_id": run_id, "index": join(out_url, "index"),
        "code_version": "0.1.0+gtest", "counts": counts, "seconds": 61.5,
        "scans_per_minute": 7.3, "masks": "segmenter",
        "model": {"source": "shipped", "name": "tiny", "sha256": "d" * 64,
                  "trained_on": trained_on, "confidence_threshold": 0.3},
        "segmenter": {"source": "shipped", "name": "tiny-seg", "sha256": "a" * 64,
                      "trained_on": trained_on, "interval_level": 0.9},
        "config": {"quantify": {"risk_thresholds_mm3": [0.0, 10.0, 100.0],
                                "risk_groups": ["none", "low", "moderate", "high"]}},
    }


def publish_cohort(out_url: str, options=None, *, trained_on="synthetic phantoms") -> str:
    """Write the index and the two runs of the module docstring under ``out_url``."""
    series_rows = []
    for key, (status, code) in MANIFEST_ROWS.items():
        r = dict.fromkeys(MANIFEST.names)
        r.update(kind="series", status=status, error_code=code, series_key=key, n_files=9,
                 n_bytes=9000, header_bytes_read=900, files=[f"{key}/{i}.dcm" for i in range(9)])
        series_rows.append(r)
    for i, code in enumerate(OBJECT_CODES):
        r = dict.fromkeys(MANIFEST.names)
        r.update(kind="object", status="not_selected" if code == "not_dicom" else "failed",
                 error_code=code, n_files=1, n_bytes=10, header_bytes_read=10,
                 files=[f"junk/{i}"])
        series_rows.append(r)
    write_index(join(out_url, "index"), manifest_table(series_rows),
                pa.Table.from_pylist([], schema=OBJECTS),
                {"what": "cohort index manifest", "n_objects": N_OBJECTS}, options)
    kw = {"trained_on": trained_on}
    run1 = [
        series_row(RUN1, "s01", "A", "20150301", total=40.0, **kw),
        series_row(RUN1, "s02", "A", "20180301", total=160.0, flags=["calcium_above_clinoid"],
             picture=True, **kw),
        series_row(RUN1, "s03", "B", "20160101", total=0.0, **kw),
        series_row(RUN1, "s04", "C", "20140601", total=8.0, **kw),
        series_row(RUN1, "s05#2", "C", "20200601", total=5.0, low=["left_anterior_clinoid"],
             flags=["low_landmark_confidence", "calcium_at_crop_edge"], picture=True, **kw),
        series_row(RUN1, "s06", "D", "20190101", total=20.0, **kw),
        series_row(RUN1, "s07", "E", "20170101", code="mask_missing", flags=["mask_problem"], **kw),
        series_row(RUN1, "s08", "F", "20170101", status="error", code="processing_failed", **kw),
        series_row(RUN1, "s09", "F", "20170101", status="error", code="too_few_slices", **kw),
        series_row(RUN1, "s10", "A", "20150301", status="skipped", code="localizer", **kw),
        series_row(RUN1, "s11", "B", "20160101", status="skipped", code="localizer", **kw),
        series_row(RUN1, "s12", "D", "20190101", status="skipped", code="not_preferred", **kw),
    ]
    run2 = [series_row(RUN2, "s08", "F", "20170101", status="error", code="decode_failed", **kw)]
    for run_id, rows in ((RUN1, run1), (RUN2, run2)):
        writer = RunWriter(out_url, run_id, options)
        for r in rows:
            writer.add(r)
            if r.get("qc_picture"):
                write_bytes(join(run_url(out_url, run_id), r["qc_picture"]),
                            _png((40, 90, 160)), options)
        counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "skipped", "error")}
        writer.publish(run_payload(run_id, out_url, counts, trained_on))
    return out_url
