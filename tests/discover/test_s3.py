"""Discovery against a real S3 server (SeaweedFS): listing in Ray tasks, headers read as
byte ranges (counted), the manifest published on the same server."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from cohort.config import DiscoveryConfig, IndexConfig
from cohort.discover import build_index, index_cohort
from cohort.discover.headers import read_headers
from cohort.discover.listing import ObjectInfo, entries_below
from cohort.discover.manifest import read_manifest
from cohort.errors import ErrorCode
from cohort.storage import is_published
from cohort.testing.archives import split_archive

from .conftest import relative_series


@pytest.fixture(scope="module")
def archive(s3_server, small_cohort, realdata):
    """A bucket with a synthetic cohort, a real Philips study and some junk objects."""
    bucket = s3_server.make_bucket("discover-archive")
    fs = s3_server.filesystem()
    fs.put(str(small_cohort / "dicom") + "/", "discover-archive/synthetic", recursive=True)
    fs.put(str(realdata / "dcm_qa_ct_philips" / "S21570") + "/", "discover-archive/philips",
           recursive=True)
    one = next((small_cohort / "dicom").rglob("IM0001.dcm")).read_bytes()
    fs.pipe({"discover-archive/junk/notes.txt": b"not an image\n",
             "discover-archive/junk/empty": b"",
             "discover-archive/junk/cut": one[: len(one) - 50]})
    return bucket, s3_server


@pytest.fixture(scope="module")
def indexed(archive, ray_local):
    bucket, server = archive
    cfg = IndexConfig(discovery=DiscoveryConfig(executor="ray", files_per_task=64))
    return index_cohort(bucket, f"{bucket}/index", cfg, server.storage_options())


def test_every_object_is_listed_with_its_s3_url(indexed, archive, small_cohort, realdata):
    bucket, server = archive
    fs = server.filesystem()
    stored = sorted(f"s3://{p}" for p in fs.find("discover-archive")
                    if not p.startswith("discover-archive/index/"))
    assert indexed.objects["uri"].to_pylist() == stored
    n_local = sum(1 for p in (small_cohort / "dicom").rglob("*") if p.is_file())
    n_philips = sum(1 for p in (realdata / "dcm_qa_ct_philips" / "S21570").rglob("*")
                    if p.is_file())
    assert len(stored) == n_local + n_philips + 3


def test_series_and_junk_are_found_on_s3(indexed, small_cohort):
    rows = indexed.manifest.to_pylist()
    truth = pq.read_table(small_cohort / "ground_truth.parquet").to_pylist()
    synthetic = [r for r in rows if r["kind"] == "series" and r["files"]
                 and r["files"][0].startswith("s3://discover-archive/synthetic/")]
    assert len(synthetic) == len(truth)
    selected = {r["series_uid"] for r in synthetic if r["status"] == "selected"}
    assert selected == {t["series_instance_uid"] for t in truth if t["series_role"] == "primary"}
    philips = [r for r in rows if r["status"] == "selected" and r["files"]
               and r["files"][0].startswith("s3://discover-archive/philips/")]
    assert [(p["n_files"], p["slice_thickness_mm"]) for p in philips] == [(28, 5.0)]
    junk = {r["files"][0].rsplit("/", 1)[1]: r["error_code"] for r in rows
            if r["files"] and r["files"][0].startswith("s3://discover-archive/junk/")}
    assert junk == {"notes.txt": ErrorCode.NOT_DICOM, "empty": ErrorCode.NOT_DICOM,
                    "cut": ErrorCode.TRUNCATED}


def test_only_byte_ranges_of_large_objects_are_fetched(indexed):
    objects = indexed.objects.to_pylist()
    large = [o for o in objects if o["size_bytes"] > 2 * 65536]
    assert len(large) == 35  # Philips images of 300 KB - 1.4 MB
    assert all(o["bytes_read"] <= 2 * 65536 for o in large)
    large_read = sum(o["bytes_read"] for o in large)
    large_size = sum(o["size_bytes"] for o in large)
    assert large_read < 0.15 * large_size
    s = indexed.stats
    assert s.header_bytes_read == sum(o["bytes_read"] for o in objects)
    assert s.header_bytes_read < 0.5 * s.object_bytes


def test_the_manifest_is_published_on_s3(indexed, archive):
    bucket, server = archive
    options = server.storage_options()
    assert indexed.manifest_url == f"{bucket}/index/manifest.parquet"
    assert is_published(f"{bucket}/index", options)
    back = read_manifest(f"{bucket}/index", options)
    assert back.equals(indexed.manifest)


def test_an_object_gone_since_the_listing_is_an_io_error_row(archive):
    bucket, server = archive
    good = "discover-archive/junk/notes.txt"
    gone = ObjectInfo("s3://discover-archive/junk/gone", "discover-archive/junk/gone", 5000)
    table = read_headers((bucket, server.storage_options(), DiscoveryConfig()),
                         [ObjectInfo(f"s3://{good}", good, 13), gone])
    assert table["error_code"].to_pylist() == [ErrorCode.NOT_DICOM, ErrorCode.IO_ERROR]
    assert "FileNotFoundError" in table["error_detail"][1].as_py()


def test_small_pages_batches_and_buckets_give_the_same_index_on_s3(archive):
    """Listing pages of 7 keys written as parts by the listing tasks, batches of 16, buckets
    of 60 objects: the same manifest as with the default sizes, and no staging folder left
    behind."""
    bucket, server = archive
    options = server.storage_options()
    sizes = {"default": DiscoveryConfig(executor="ray"),
             "small": DiscoveryConfig(executor="ray", files_per_task=16, list_page_objects=7,
                                      objects_per_group_task=60)}
    got = {name: index_cohort(f"{bucket}/synthetic", f"{bucket}/out-{name}",
                              IndexConfig(discovery=d), options) for name, d in sizes.items()}
    assert got["small"].manifest.equals(got["default"].manifest)
    assert got["small"].objects.equals(got["default"].objects)
    assert got["small"].stats.objects == got["default"].objects.num_rows > 60 * 3
    # (SeaweedFS keeps the emptied staging folder as a prefix without objects)
    left = [p for p, _ in entries_below(server.filesystem(), "discover-archive/out-small")]
    assert sorted(p.rsplit("/", 1)[1] for p in left) == [
        "_SUCCESS.json", "manifest.parquet", "objects.parquet"]


def test_an_s3_prefix_is_listed_a_page_of_keys_per_request(archive):
    from cohort.discover.listing import _s3_entries

    bucket, server = archive
    fs = server.filesystem()
    keys = [e["name"] for e in _s3_entries(fs, "discover-archive/junk", delimiter="",
                                           max_keys=2)]
    assert sorted(keys) == sorted(fs.find("discover-archive/junk"))
    assert len(keys) == 3


def test_two_buckets_make_one_index_on_s3(s3_server, small_cohort, ray_local, tmp_path):
    """The archive spread over two buckets (one series with slices in both), listed in Ray
    tasks: the index of the whole archive, written to one of them."""
    folder, moved = split_archive(small_cohort / "dicom", tmp_path / "a", tmp_path / "b")
    fs = s3_server.filesystem()
    a, b = s3_server.make_bucket("several-a"), s3_server.make_bucket("several-b")
    fs.put(str(tmp_path / "a") + "/", "several-a/ct", recursive=True)
    fs.put(str(tmp_path / "b") + "/", "several-b/more/ct", recursive=True)
    options = s3_server.storage_options()
    inputs = [f"{a}/ct", f"{b}/more/ct"]
    cfg = IndexConfig(discovery=DiscoveryConfig(executor="ray", files_per_task=32,
                                                list_page_objects=50))
    result = index_cohort(inputs, f"{a}/index", cfg, options)
    whole = build_index(str(small_cohort / "dicom"),
                        IndexConfig(discovery=DiscoveryConfig(executor="local")))
    assert relative_series(result.manifest, inputs) == relative_series(
        whole.manifest, [small_cohort / "dicom"])
    assert result.stats.objects == whole.stats.objects
    split = [r for r in result.manifest.to_pylist()
             if r["kind"] == "series" and any(folder in f for f in r["files"])]
    assert len(split) == 1 and split[0]["status"] == "selected"
    assert sum(f.startswith(f"{b}/more/ct/") for f in split[0]["files"]) == moved
    back = read_manifest(f"{a}/index", options)
    assert back.equals(result.manifest)
    left = [p for p, _ in entries_below(fs, "several-a/index")]
    assert sorted(p.rsplit("/", 1)[1] for p in left) == [
        "_SUCCESS.json", "manifest.parquet", "objects.parquet"]  # no staging folder left
    marker = json.loads(fs.cat_file("several-a/index/_SUCCESS.json"))
    assert marker["inputs"] == inputs
