"""URLs -> filesystems: local folders, S3 (with a custom endpoint) and other fsspec protocols.

Every stage reads and writes through `filesystem(url, options)`, so the same code runs on a
laptop folder and on object storage. Results are published by writing the data first and a
small JSON marker last (`publish_marker`); readers trust a folder only once the marker is
there (`is_published`).

Credentials come from `StorageOptions` or, when it leaves them empty, from the standard AWS
credential chain. They never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import fsspec
from fsspec.implementations.local import LocalFileSystem

from cohort.errors import StorageError

logger = logging.getLogger(__name__)

# Protocols served by s3fs.
_S3_PROTOCOLS = frozenset({"s3", "s3a"})
# Object stores: a "folder" is only a key prefix (nothing to create) and one PUT is atomic.
_OBJECT_STORE_PROTOCOLS = _S3_PROTOCOLS | {"gs", "gcs", "az", "abfs", "abfss", "adl", "oss"}
_LOCAL_PROTOCOLS = frozenset({"file", "local"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# user:password@ in a URL's authority, to keep it out of messages.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/@]*@")
_WRITABLE_HINT = (
    "give a folder you can write to or an s3:// URL whose bucket exists and whose "
    "credentials allow PutObject"
)


S3_MAX_ATTEMPTS = 10  # per request, first try included


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object storage; the defaults mean AWS with the standard credential chain."""

    endpoint_url: str | None = None  # S3-compatible server, e.g. "http://127.0.0.1:8333"
    key: str | None = None  # access key id; None: the AWS credential chain decides
    secret: str | None = None  # secret access key; None: the AWS credential chain decides
    region: str | None = None  # None: botocore's default (us-east-1 for custom endpoints)
    anon: bool = False  # unsigned requests, for public buckets
    token: str | None = None  # session token that goes with temporary key/secret

    @classmethod
    def from_env(cls) -> StorageOptions:
        """Options from the environment.

        The endpoint is ``COHORT_S3_ENDPOINT``, else ``AWS_ENDPOINT_URL_S3``, else
        ``AWS_ENDPOINT_URL``. Keys are copied only when both ``AWS_ACCESS_KEY_ID`` and
        ``AWS_SECRET_ACCESS_KEY`` are set (with ``AWS_SESSION_TOKEN`` if present); otherwise
        they stay None and the AWS credential chain (profiles, instance roles) finds them.
        ``COHORT_S3_ANON=1`` asks for unsigned requests.
        """
        env = os.environ
        endpoint = (
            env.get("COHORT_S3_ENDPOINT")
            or env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL")
            or None
        )
        key = env.get("AWS_ACCESS_KEY_ID") or None
        secret = env.get("AWS_SECRET_ACCESS_KEY") or None
        if key is None or secret is None:
            key = secret = None
        token = (env.get("AWS_SESSION_TOKEN") or None) if key else None
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
        anon = env.get("COHORT_S3_ANON", "").strip().lower() in {"1", "true", "yes"}
        return cls(
            endpoint_url=endpoint, key=key, secret=secret, region=region, anon=anon, token=token
        )

    def __repr__(self) -> str:
        def hidden(value: str | None) -> str:
            return "None" if value is None else "'***'"

        return (
            f"StorageOptions(endpoint_url={self.endpoint_url!r}, key={hidden(self.key)}, "
            f"secret={hidden(self.secret)}, region={self.region!r}, anon={self.anon!r}, "
            f"token={hidden(self.token)})"
        )

    __str__ = __repr__

    def arrow_s3(self):
        """The same endpoint and credentials as a `pyarrow.fs.S3FileSystem` (what Ray Data's
        readers take; it pickles to workers without a live client)."""
        from urllib.parse import urlparse

        from pyarrow.fs import AwsStandardS3RetryStrategy, S3FileSystem

        kwargs: dict = {"anonymous": self.anon,
                        "retry_strategy": AwsStandardS3RetryStrategy(
                            max_attempts=S3_MAX_ATTEMPTS)}
        if self.endpoint_url:
            parsed = urlparse(self.endpoint_url)
            kwargs["endpoint_override"] = parsed.netloc or self.endpoint_url
            kwargs["scheme"] = parsed.scheme or "https"
            kwargs["force_virtual_addressing"] = False
        if self.region:
            kwargs["region"] = self.region
        if not self.anon and self.key is not None and self.secret is not None:
            kwargs.update(access_key=self.key, secret_key=self.secret)
            if self.token is not None:
                kwargs["session_token"] = self.token
        return S3FileSystem(**kwargs)

    def s3fs_kwargs(self) -> dict:
        """Keyword arguments for `s3fs.S3FileSystem` (they include the secrets: never log)."""
        client_kwargs: dict = {}
        # throttling and transient errors (503 SlowDown, timeouts, resets) are retried with
        # exponential back-off and jitter by botocore's "adaptive" mode, which also slows
        # the client down when the server throttles
        config_kwargs: dict = {"retries": {"max_attempts": S3_MAX_ATTEMPTS, "mode": "adaptive"},
                               "connect_timeout": 20, "read_timeout": 120}
        if self.endpoint_url:
            client_kwargs["endpoint_url"] = self.endpoint_url
            # S3-compatible servers (SeaweedFS, MinIO, Ceph) reach buckets by path, not by a
            # bucket.host DNS name.
            config_kwargs["s3"] = {"addressing_style": "path"}
        if self.region:
            client_kwargs["region_name"] = self.region
        kwargs: dict = {
            "anon": self.anon,
            # Listings change under us (other workers write); always ask the server.
            "use_listings_cache": False,
            "client_kwargs": client_kwargs,
            "config_kwargs": config_kwargs,
        }
        if not self.anon:
            if self.key is not None:
                kwargs["key"] = self.key
            if self.secret is not None:
                kwargs["secret"] = self.secret
            if self.token is not None:
                kwargs["token"] = self.token
        return kwargs


def protocol_of(url: str) -> str:
    """The URL's scheme in lower case ("s3", "gs", ...), or "file" for a plain path."""
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else "file"


def is_local(url: str) -> bool:
    """True when `url` is a plain path or a file:// URL."""
    return protocol_of(url) in _LOCAL_PROTOCOLS


def redact(url: str) -> str:
    """`url` with any ``user:password@`` part replaced by ``***@``, for messages and logs."""
    return _USERINFO.sub(r"\1***@", url)


def filesystem(
    url: str, options: StorageOptions | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem that serves `url`, and the path of `url` inside it.

    Args:
        url: a local path, ``file://...``, ``s3://bucket/prefix`` or any URL whose protocol
            fsspec knows (``gs://``, ``memory://``, ...).
        options: endpoint and credentials for s3:// URLs; None means `StorageOptions()`
            (AWS, standard credential chain). Other protocols use their own defaults.

    Returns:
        ``(fs, path)``: for local URLs an absolute path, for s3 ``"bucket/prefix"``.

    Raises:
        StorageError: the protocol is unknown, or its fsspec package is not installed.
    """
    protocol = protocol_of(url)
    if protocol in _LOCAL_PROTOCOLS:
        path = _SCHEME.sub("", url, count=1) if _SCHEME.match(url) else url
        return LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    if protocol in _S3_PROTOCOLS:
        import s3fs  # deferred: s3fs + botocore take ~0.2 s to import; local runs skip that

        options = options or StorageOptions()
        logger.debug("s3 filesystem for %s with %r", redact(url), options)
        fs = s3fs.S3FileSystem(**options.s3fs_kwargs())
        return fs, _SCHEME.sub("", url, count=1).strip("/")
    if protocol not in fsspec.available_protocols():
        raise StorageError(
            f"unknown storage protocol {protocol!r} in {redact(url)}; give a local folder, a "
            "file:// or s3:// URL, or a URL of another fsspec protocol (gs://, az://, ...) "
            "with its package installed"
        )
    try:
        fs = fsspec.filesystem(protocol)
    except ImportError as e:
        raise StorageError(
            f"storage protocol {protocol!r} in {redact(url)} needs a package that is not "
            f"installed: {e}"
        ) from e
    return fs, type(fs)._strip_protocol(url)


def join(url: str, *parts: str) -> str:
    """`url` extended by `parts`: with os.path for local paths, with '/' for URLs.

    Leading and trailing slashes of the parts are dropped, so no '//' appears and a part
    never restarts the path at the root; empty parts are skipped.
    """
    cleaned = [p.strip("/" + os.sep) for p in parts]
    cleaned = [p for p in cleaned if p]
    if not cleaned:
        return url
    if _SCHEME.match(url):
        head = url if url.endswith("://") else url.rstrip("/") + "/"
        return head + "/".join(cleaned)
    return os.path.join(url, *cleaned)


def write_bytes(url: str, data: bytes, options: StorageOptions | None = None) -> None:
    """Write `data` to the file or object at `url`, replacing it whole.

    Local files are written to a temporary name and renamed, so readers never see half a
    file; missing parent folders are created.

    Raises:
        StorageError: the write failed (no permission, missing bucket, ...).
    """
    fs, path = filesystem(url, options)
    try:
        _put(fs, path, data, protocol_of(url))
    except (OSError, ValueError) as e:
        raise StorageError(
            f"cannot write {redact(url)}: {_reason(e, options)}; {_WRITABLE_HINT}"
        ) from e


def cat_whole(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
    """The whole object at `path` in one request, for objects known to be small (well under
    s3fs's 50 MiB split-read block: the slices of a single-frame DICOM series).

    s3fs's ``cat_file`` first asks the server for the object's size (a HEAD request) to
    decide whether to split it into concurrent ranged GETs; for the thousands of small
    objects of a cohort that doubles the requests, and the client's and the server's CPU
    per slice, for nothing (`benchmarks/bench_cpu_stage.py` measures it). Other
    filesystems read as ``cat_file`` does.
    """
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if protocols & _S3_PROTOCOLS:
        return fs.cat_file(path, max_concurrency=1)
    return fs.cat_file(path)


def read_bytes(url: str, options: StorageOptions | None = None) -> bytes:
    """The whole content of the file or object at `url`.

    Raises:
        StorageError: it does not exist or cannot be read.
    """
    fs, path = filesystem(url, options)
    try:
        return fs.cat_file(path)
    except FileNotFoundError as e:
        raise StorageError(
            f"cannot read {redact(url)}: no such file or object; check the URL and, for "
            "s3://, the endpoint"
        ) from e
    except (OSError, ValueError) as e:
        raise StorageError(f"cannot read {redact(url)}: {_reason(e, options)}") from e


def check_endpoint(options: StorageOptions | None, *, attempts: int = 5,
                   timeout_s: float = 3.0) -> None:
    """Fail within seconds, saying so at each retry, when the S3 endpoint of ``options``
    cannot be reached (the storage client's own retries would wait a minute in silence).

    Raises:
        StorageError: no connection after ``attempts`` tries, naming the endpoint.
    """
    endpoint = options.endpoint_url if options is not None else None
    if not endpoint:
        return
    parts = urlparse(endpoint)
    host = parts.hostname or endpoint
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for attempt in range(1, attempts + 1):
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            return
        except OSError as e:
            reason = f"{type(e).__name__}: {e}"
            if attempt == attempts:
                raise StorageError(f"cannot reach the S3 endpoint {endpoint} ({reason}) after "
                                   f"{attempts} attempts; check --s3-endpoint and that the "
                                   "server runs") from e
            logger.warning("cannot reach %s (%s); retrying (attempt %d of %d)", endpoint,
                           reason, attempt + 1, attempts)
            time.sleep(min(2.0 ** (attempt - 1), 4.0))


def check_writable(url: str, options: StorageOptions | None = None) -> None:
    """Fail early unless objects can be written under `url`.

    Writes and deletes a small probe object. A local folder that does not exist yet is not
    created (a command refused later must leave nothing behind): its nearest existing parent
    must be a folder this process may write in.

    Raises:
        StorageError: naming `url`, the reason, and what would work.
    """
    if protocol_of(url) in _OBJECT_STORE_PROTOCOLS:
        check_endpoint(options)
    fs, path = filesystem(url, options)
    protocol = protocol_of(url)
    probe = f"{path.rstrip('/')}/.cohort-write-probe-{uuid.uuid4().hex}"
    if isinstance(fs, LocalFileSystem) and not os.path.exists(path):
        parent = os.path.abspath(path)
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise StorageError(f"cannot write to {redact(url)}: {parent} is not a folder this "
                               f"process may write in; {_WRITABLE_HINT}")
        return
    try:
        if protocol not in _OBJECT_STORE_PROTOCOLS:
            # Not for s3: s3fs.makedirs would *create a missing bucket*, hiding a wrong URL.
            fs.makedirs(path, exist_ok=True)
        fs.pipe_file(probe, b"cohort write probe\n")
        fs.rm_file(probe)
    except (OSError, ValueError) as e:
        raise StorageError(
            f"cannot write to {redact(url)}: {_reason(e, options)}; {_WRITABLE_HINT}"
        ) from e
    logger.debug("%s is writable", redact(url))


def publish_marker(
    url_prefix: str,
    payload: dict,
    options: StorageOptions | None = None,
    name: str = "_SUCCESS.json",
) -> str:
    """Publish the folder `url_prefix` by writing `payload` as JSON to ``<url_prefix>/<name>``.

    Call it last, after every data file is written: readers take the folder as complete
    once the marker exists. Local and other filesystems get a temporary file renamed into
    place; on object stores the single PUT is atomic.

    Returns:
        The marker's URL.

    Raises:
        TypeError: `payload` is not JSON-serialisable.
        StorageError: the marker could not be written.
    """
    data = (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode("utf-8")
    marker = join(url_prefix, name)
    write_bytes(marker, data, options)
    logger.info("published %s", redact(marker))
    return marker


def is_published(
    url_prefix: str, options: StorageOptions | None = None, name: str = "_SUCCESS.json"
) -> bool:
    """True when the marker ``<url_prefix>/<name>`` exists (see `publish_marker`).

    Raises:
        StorageError: the storage could not be asked (no permission, unreachable endpoint).
    """
    marker = join(url_prefix, name)
    fs, path = filesystem(marker, options)
    try:
        # info(), not isfile(): s3fs.isfile answers False on *any* error, bad credentials too.
        return fs.info(path)["type"] == "file"
    except FileNotFoundError:
        return False
    except OSError as e:
        raise StorageError(f"cannot check {redact(marker)}: {_reason(e, options)}") from e


@contextlib.contextmanager
def _local_atomic(path: str) -> Iterator:
    """A binary file for a local ``path`` that appears whole or not at all: written under a
    temporary name, synced, renamed into place (removed on any failure)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    # os.open with 0o666, not mkstemp (0o600): the file gets the umask's usual mode.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_file(url: str, options: StorageOptions | None = None) -> Iterator:
    """A binary file to write ``url`` through in pieces, that appears whole or not at all: a
    temporary name renamed into place on local disks, one (multipart) upload elsewhere
    (aborted on failure).

    Raises:
        StorageError: the file cannot be written.
    """
    fs, path = filesystem(url, options)
    try:
        if is_local(url):
            with _local_atomic(path) as f:
                yield f
            return
        f = fs.open(path, "wb")
        try:
            yield f
        except BaseException:
            discard = getattr(f, "discard", None)
            if discard is not None:
                discard()  # the multipart upload is aborted: no half object appears
            raise
        f.close()
    except OSError as e:
        raise StorageError(f"cannot write {redact(url)}: {e}") from e


def _put(fs: fsspec.AbstractFileSystem, path: str, data: bytes, protocol: str) -> None:
    """Write `data` at `path` atomically: one PUT on object stores, temp + rename elsewhere."""
    if protocol in _OBJECT_STORE_PROTOCOLS:
        fs.pipe_file(path, data)
        return
    if isinstance(fs, LocalFileSystem):
        with _local_atomic(path) as f:
            f.write(data)
        return
    parent = fs._parent(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    fs.pipe_file(tmp, data)
    fs.mv(tmp, path)


def _reason(error: BaseException, options: StorageOptions | None) -> str:
    """The error's message with any credential of `options` blanked out."""
    text = str(error) or type(error).__name__
    if options is not None:
        for secret in (options.key, options.secret, options.token):
            if secret:
                text = text.replace(secret, "***")
    return text
