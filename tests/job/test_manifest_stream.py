"""The job reads the manifest as a stream: the driver counts in bounded batches, the rows to
process come from Ray Data's read tasks, one series per block, and resume filters by key."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cohort.discover.manifest import MANIFEST_FILE
from cohort.job import manifest_stream
from cohort.job.manifest_stream import (
    not_processed_rows,
    scan_manifest,
    series_dataset,
)
from cohort.schemas import MANIFEST
from cohort.write.identity import IdentityConfig
from cohort.write.runs import Finished

N = 2500  # more rows than a scan batch holds


def _row(i: int) -> dict:
    row = dict.fromkeys(MANIFEST.names)
    status = ("selected", "not_selected", "failed")[i % 3] if i % 10 else "selected"
    row.update(kind="series", status=status, series_key=f"s{i:05d}",
               series_uid=f"1.2.{i}", patient_id=f"p{i // 4}", study_uid=f"1.3.{i // 2}",
               n_files=2, n_bytes=10, header_bytes_read=2,
               files=[f"/archive/p{i // 4}/{i}/a.dcm", f"/archive/p{i // 4}/{i}/b.dcm"],
               error_code=None if status == "selected" else "not_preferred",
               error_detail=None if status == "selected" else f"/archive/p{i // 4}/{i} not it")
    return row


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("index")
    rows = [_row(i) for i in range(N)]
    rows.append({**dict.fromkeys(MANIFEST.names), "kind": "object", "status": "failed",
                 "n_files": 1, "n_bytes": 5, "header_bytes_read": 5, "files": ["/x/readme"]})
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST), folder / MANIFEST_FILE,
                   row_group_size=700)
    return str(folder), rows


def _finished(done=(), skipped=()):
    return Finished(pa.array(list(done), pa.string()), pa.array(list(skipped), pa.string()))


def test_counts_and_limit_in_manifest_order(index):
    url, rows = index
    series = [r for r in rows if r["kind"] == "series"]
    selected = [r["series_key"] for r in series if r["status"] == "selected"]
    done = selected[:5] + ["s00001"]  # s00001 is not selected: done either way
    plan = scan_manifest(url, None, _finished(done), max_series=7, want_uids=True)
    assert plan.series == N
    assert plan.finished_earlier == 6 and plan.todo == N - 6
    assert plan.to_process == 7 and plan.left_for_later == len(selected) - 5 - 7
    assert plan.not_processed == len(series) - len(selected) - 1
    assert plan.limit.to_pylist() == selected[5:12]
    assert list(plan.uids) == [f"1.2.{int(k[1:])}" for k in selected[5:12]]
    whole = scan_manifest(url, None, _finished())
    assert whole.limit is None and whole.to_process == len(selected) and whole.uids == ()


def test_a_skipped_series_the_index_now_selects_is_done_again(index):
    url, _ = index
    # s00000 was skipped earlier and is selected now; s00001 was skipped and still is
    plan = scan_manifest(url, None, _finished(skipped=["s00000", "s00001"]))
    base = scan_manifest(url, None, _finished())
    assert plan.to_process == base.to_process
    assert plan.not_processed == base.not_processed - 1


def test_rows_not_processed_come_in_batches_with_paths_scrubbed(index, monkeypatch):
    url, rows = index
    expect = {r["series_key"]: r["status"] for r in rows
              if r["kind"] == "series" and r["status"] != "selected"}
    sizes = []
    batches = manifest_stream._batches

    def counting(*a, **k):
        for b in batches(*a, **k):
            sizes.append(b.num_rows)
            yield b

    monkeypatch.setattr(manifest_stream, "_batches", counting)
    got = list(not_processed_rows(url, None, _finished(), {"run_id": "r"},
                                  IdentityConfig(salt="s")))
    assert {r["series_key"]: r["status"] for r in got} == {
        k: "error" if s == "failed" else "skipped" for k, s in expect.items()}
    assert max(sizes) <= manifest_stream.SCAN_BATCH_ROWS < N  # never the whole manifest
    assert all("/archive" not in (r["error_detail"] or "") for r in got)
    assert all(r["patient_key"] and not r["patient_key"].startswith("p") for r in got)


def test_the_rows_to_process_come_from_ray_one_per_block(index, ray_local):
    url, rows = index
    selected = [r["series_key"] for r in rows
                if r["kind"] == "series" and r["status"] == "selected"]
    finished = _finished(selected[:3])
    plan = scan_manifest(url, None, finished, max_series=9)
    ds = series_dataset(url, None, finished, plan, {"run_id": "r"},
                        IdentityConfig(keep_ids=True)).materialize()
    got = ds.take_all()
    assert sorted(r["series_key"] for r in got) == selected[3:12]
    assert ds.num_blocks() == 9
    first = next(r for r in got if r["series_key"] == selected[3])
    assert list(first["files"]) == _row(int(selected[3][1:]))["files"]
    assert first["status"] == "ok" and first["run_id"] == "r"
