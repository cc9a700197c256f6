"""The index in bounded driver memory: paged listings, header rows and series rows staged
as Parquet parts and grouped in buckets, the parts merged into one manifest. Whatever the
page, batch and bucket sizes, the result is the index of the whole table at once."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from cohort.config import DiscoveryConfig, IndexConfig
from cohort.discover import build_index, index_cohort
from cohort.discover import staged as staged_module
from cohort.discover.index import STAGING_PREFIX
from cohort.discover.listing import iter_object_pages, list_objects
from cohort.discover.manifest import (
    add_counts,
    by_kind_counts,
    manifest_table,
    object_row,
    read_manifest,
)
from cohort.discover.selection import select_series
from cohort.discover.staged import Stage, merge_parts, series_rows
from cohort.errors import ErrorCode
from cohort.schemas import OBJECTS

from .conftest import edited

#: pages of 7 objects, batches of 16, buckets of 40 objects: many of each on a small archive
SMALL_PARTS = DiscoveryConfig(executor="local", files_per_task=16, list_page_objects=7,
                              objects_per_group_task=40)


@pytest.fixture(scope="module")
def archive(small_cohort, tmp_path_factory) -> Path:
    """The small synthetic cohort plus junk: a text file, a truncated image, an image
    without SeriesInstanceUID."""
    root = tmp_path_factory.mktemp("staged") / "archive"
    shutil.copytree(small_cohort / "dicom", root)
    first = next(root.rglob("IM0001.dcm"))
    one = first.read_bytes()
    (root / "junk").mkdir()
    (root / "junk" / "notes.txt").write_text("not an image\n")
    (root / "junk" / "cut").write_bytes(one[: len(one) - 50])
    (root / "junk" / "orphan.dcm").write_bytes(edited(one, SeriesInstanceUID=None))
    return root


@pytest.fixture(scope="module")
def one_bucket(archive):
    """The index with the default sizes: one page, one batch per 256 objects, one bucket."""
    return build_index(str(archive), IndexConfig(discovery=DiscoveryConfig(executor="local")))


def reference(objects: pa.Table, cfg: IndexConfig) -> pa.Table:
    """The manifest as `cohort index` made it before staging: every header in one table,
    grouped, selected and sorted at once."""
    headers = objects.drop_columns(["series_key"]).append_column(
        OBJECTS.field("series_key"), pa.nulls(objects.num_rows, pa.string()))
    rows, _ = series_rows(headers, cfg)
    select_series(rows, cfg.selection)
    bad = headers.filter(pc.is_valid(headers["error_code"])).to_pylist()
    return manifest_table(rows + [object_row(r) for r in bad])


def test_the_one_bucket_index_is_the_index_of_the_whole_table(archive, one_bucket):
    n = sum(1 for p in archive.rglob("*") if p.is_file())
    assert one_bucket.stats.objects == one_bucket.objects.num_rows == n
    assert one_bucket.objects["uri"].to_pylist() == sorted(str(p) for p in archive.rglob("*")
                                                           if p.is_file())
    assert one_bucket.manifest.equals(reference(one_bucket.objects, IndexConfig()))
    codes = {r["files"][0].rsplit("/", 1)[1]: r["error_code"]
             for r in one_bucket.manifest.to_pylist() if r["kind"] == "object"}
    assert codes == {"notes.txt": ErrorCode.NOT_DICOM, "cut": ErrorCode.TRUNCATED}
    assert one_bucket.counts == by_kind_counts(one_bucket.manifest)


def test_small_pages_batches_and_buckets_give_the_same_index(archive, one_bucket):
    cfg = IndexConfig(discovery=SMALL_PARTS)
    assert -(-one_bucket.stats.objects // SMALL_PARTS.objects_per_group_task) >= 5
    result = build_index(str(archive), cfg)
    assert result.manifest.equals(one_bucket.manifest)
    assert result.objects.equals(one_bucket.objects)
    assert result.counts == one_bucket.counts
    assert result.stats.header_bytes_read == one_bucket.stats.header_bytes_read


def test_the_driver_neither_reads_headers_nor_groups_nor_selects_nor_merges(
        archive, one_bucket, tmp_path, monkeypatch, ray_local):
    """With Ray, every row-sized step runs in a task: here they would raise."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a step that holds rows ran in the driver")

    for name in ("read_headers", "series_rows", "select_series", "manifest_table",
                 "merge_parts"):
        monkeypatch.setattr(staged_module, name, forbidden)
    cfg = IndexConfig(discovery=DiscoveryConfig(executor="ray", files_per_task=32,
                                                objects_per_group_task=100))
    out = tmp_path / "index"
    result = index_cohort(str(archive), str(out), cfg)
    assert read_manifest(str(out)).equals(one_bucket.manifest)
    assert result.objects.equals(one_bucket.objects)
    assert not [p for p in os.listdir(out) if p.startswith(STAGING_PREFIX)]
    assert sorted(os.listdir(out)) == ["_SUCCESS.json", "manifest.parquet", "objects.parquet"]


def test_local_listing_comes_in_pages(archive):
    pages = list(iter_object_pages(str(archive), page_objects=3))
    assert all(1 <= len(p) <= 3 for p in pages)
    listed = sorted(o for p in pages for o in p)
    assert listed == list_objects(str(archive))
    assert len(listed) == sum(1 for p in archive.rglob("*") if p.is_file())


def test_a_flat_folder_is_listed_in_pages_too(tmp_path):
    for i in range(10):
        (tmp_path / f"f{i:02d}").write_bytes(b"x" * i)
    pages = list(iter_object_pages(str(tmp_path), page_objects=4))
    assert [len(p) for p in pages] == [4, 4, 2]
    assert sorted((Path(o.path).name, o.size) for p in pages for o in p) == [
        (f"f{i:02d}", i) for i in range(10)]


def test_merge_of_sorted_parts_is_sorted_and_whole(tmp_path):
    schema = pa.schema([("uri", pa.string()), ("n", pa.int64())])
    stage = Stage(str(tmp_path / "stage"))
    values = [[f"u{i:04d}" for i in range(k, 3000, 3)] for k in range(3)]
    parts = [stage.write(pa.table({"uri": v, "n": list(range(len(v)))}, schema=schema),
                         f"{k}.parquet") for k, v in enumerate(values)]
    parts.append(stage.write(schema.empty_table(), "empty.parquet"))
    out = str(tmp_path / "merged.parquet")
    assert merge_parts(parts, out, schema, lambda r: r["uri"], None) == 3000
    merged = pq.read_table(out)
    assert merged["uri"].to_pylist() == [f"u{i:04d}" for i in range(3000)]
    assert pq.ParquetFile(out).num_row_groups > 1  # written a batch at a time
    assert merge_parts(parts[-1:], str(tmp_path / "none.parquet"), schema, None, None) == 0
    assert pq.read_table(tmp_path / "none.parquet").num_rows == 0
    stage.remove()
    assert not (tmp_path / "stage").exists()


def test_counts_of_parts_add_up_to_the_counts_of_the_whole(one_bucket):
    m = one_bucket.manifest
    half = m.num_rows // 2
    assert add_counts(by_kind_counts(m.slice(0, half)),
                      by_kind_counts(m.slice(half))) == by_kind_counts(m)
