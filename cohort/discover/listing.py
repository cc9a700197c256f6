"""Listing every object under a URL, whatever the folder layout or file names.

The driver walks the first levels of the tree (one ``ls`` per prefix) until it has enough
prefixes to share out, then the prefixes are listed recursively in parallel tasks. Each
object keeps its size from the listing, so header reads need no extra request.

Listings come in pages (`iter_object_pages`): S3 is read one ListObjectsV2 page at a time
and other filesystems a folder at a time, so an archive of millions of objects is never
held whole; the parallel tasks write their pages as Parquet parts to a staging folder.

An index may cover several inputs (folders, prefixes, buckets) on one storage:
`check_inputs` checks them all before any work, and they are listed one after the other.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from cohort.errors import ConfigError, StorageError
from cohort.storage import (
    StorageOptions,
    check_endpoint,
    filesystem,
    is_local,
    join,
    protocol_of,
    read_bytes,
    redact,
    write_bytes,
)

logger = logging.getLogger(__name__)

# Stop walking down in the driver at this depth, or once this many prefixes are found per
# parallel slot: deeper trees are listed inside the tasks.
_MAX_WALK_DEPTH = 4
_PREFIXES_PER_SLOT = 4


class ObjectInfo(NamedTuple):
    """One listed object: its URL, its path inside the filesystem, and its size."""

    uri: str
    path: str
    size: int


def uri_of(url: str, path: str) -> str:
    """The URL of ``path`` on the filesystem that serves ``url`` (local: the path itself)."""
    if is_local(url):
        return path
    return f"{protocol_of(url)}://{path}"


def list_objects(url: str, options: StorageOptions | None = None, *,
                 parallel_map: Callable[[Callable, object, Sequence], list] | None = None,
                 slots: int = 1) -> list[ObjectInfo]:
    """Every object (file) under ``url``, sorted by URL, in one list (`iter_object_pages`
    gives them in pages, for archives too large to hold).

    Args:
        url: a folder, a prefix (``s3://bucket/prefix``) or a single object.
        options: storage endpoint and credentials.
        parallel_map: ``f(fn, context, items) -> [fn(context, item) ...]`` running on
            workers (e.g. `cohort.discover.parallel.Runner.map`); None lists here.
        slots: how many workers share the listing.

    Raises:
        StorageError: nothing exists under ``url``, or the storage cannot be listed.
    """
    found = [o for page in iter_object_pages(url, options, parallel_map=parallel_map,
                                             slots=slots) for o in page]
    objects = sorted({o.path: o for o in found}.values())
    logger.info("listed %d objects (%d bytes) under %s", len(objects),
                sum(o.size for o in objects), redact(url))
    return objects


def iter_object_pages(url: str, options: StorageOptions | None = None, *,
                      page_objects: int = 1000,
                      parallel_map: Callable[[Callable, object, Sequence], list] | None = None,
                      slots: int = 1, stage_url: str | None = None
                      ) -> Iterator[list[ObjectInfo]]:
    """Every object (file) under ``url``, in pages of at most ``page_objects``; pages come
    in listing order, not sorted. Only a page (and the prefixes of the first levels of the
    tree) is held at a time: object stores are listed a page of keys per request.

    Args:
        url: a folder, a prefix (``s3://bucket/prefix``) or a single object.
        options: storage endpoint and credentials.
        page_objects: the most objects per page.
        parallel_map: as for `list_objects`: the prefixes below the first levels are listed
            in parallel tasks. With ``stage_url`` the tasks write their pages as Parquet
            parts under it (read back here one page at a time); without, they return them.
        slots: how many workers share the listing.
        stage_url: a folder the tasks can write to (see ``parallel_map``).

    Raises:
        StorageError: nothing exists under ``url``, or the storage cannot be listed.
    """
    fs, root = filesystem(url, options)
    check_input(url, options)
    listed = 0
    try:
        if fs.isfile(root):
            yield [ObjectInfo(uri_of(url, root), root, int(fs.size(root)))]
            return
        prefixes: list[str] = []
        for page in _walk(fs, url, root, target=max(1, slots) * _PREFIXES_PER_SLOT,
                          prefixes=prefixes, page_objects=page_objects):
            listed += len(page)
            yield page
    except (OSError, ValueError) as e:
        if isinstance(e, StorageError):
            raise
        raise StorageError(f"cannot list {redact(url)}: {e}") from e
    if prefixes:
        groups = _share(prefixes, max(1, slots) * _PREFIXES_PER_SLOT)
        if parallel_map is not None and stage_url is not None:
            context = (url, options, stage_url, page_objects)
            for parts in parallel_map(list_into_parts, context, list(enumerate(groups))):
                for part in parts:
                    page = _read_part(part, options)
                    listed += len(page)
                    yield page
        elif parallel_map is not None:
            for page in parallel_map(find_under, (url, options), groups):
                listed += len(page)
                yield page
        else:
            for page in _find_pages(fs, url, prefixes, page_objects):
                listed += len(page)
                yield page
    if not listed:
        raise StorageError(f"input {redact(url)} holds no objects; check the URL")


def check_input(url: str, options: StorageOptions | None = None) -> None:
    """Fail early, with one clear line, unless ``url`` names an object or a non-empty prefix.

    Raises:
        StorageError: naming the URL and what to check.
    """
    if protocol_of(url) in ("s3", "s3a"):
        check_endpoint(options)
    fs, root = filesystem(url, options)
    try:
        exists = fs.exists(root)
    except (OSError, ValueError) as e:
        raise StorageError(f"cannot reach input {redact(url)}: {e}; check the URL, the "
                           "credentials and, for s3://, --s3-endpoint") from e
    if not exists:
        raise StorageError(
            f"input {redact(url)} does not exist (no object or folder of that name); check "
            "the URL and, for s3://, the bucket and --s3-endpoint")


def input_list(urls: str | Sequence[str]) -> tuple[str, ...]:
    """The inputs of an index or a run as a tuple: one URL (a str) or several.

    Raises:
        ConfigError: no URL at all.
    """
    found = (urls,) if isinstance(urls, str) else tuple(urls)
    if not found:
        raise ConfigError("no input given: give one or more folders or s3:// prefixes")
    return found


def describe_inputs(urls: Sequence[str]) -> str:
    """The inputs for a message or a summary: redacted, comma-separated."""
    return ", ".join(redact(u) for u in urls)


def check_inputs(urls: str | Sequence[str], options: StorageOptions | None = None
                 ) -> tuple[str, ...]:
    """`check_input` for each of ``urls``, after checking that they can make one index:
    all on one storage (local folders, or one object store reached with ``options``), and
    none given twice or lying inside another (its objects would be listed twice).

    Returns:
        The inputs as a tuple (`input_list`).

    Raises:
        ConfigError: inputs on different storages, or overlapping ones, naming them.
        StorageError: an input does not exist or cannot be reached, naming it.
    """
    inputs = input_list(urls)
    kinds = {_storage_of(u) for u in inputs}
    if len(kinds) > 1:
        raise ConfigError(
            f"the inputs {describe_inputs(inputs)} lie on different storages "
            f"({', '.join(sorted(kinds))}); one index reads one storage: give local folders "
            "or prefixes of one object store, or copy them to one place")
    paths = [filesystem(u, options)[1].rstrip("/") for u in inputs]
    for i, a in enumerate(paths):
        for j, b in enumerate(paths):
            if i != j and (a == b and i > j or a.startswith(b + "/")):
                what = "is given twice" if a == b else f"lies inside {redact(inputs[j])}"
                raise ConfigError(f"input {redact(inputs[i])} {what}: its objects would be "
                                  "listed twice; give it once")
    for url in inputs:
        check_input(url, options)
    return inputs


def _storage_of(url: str) -> str:
    """The storage an input lies on: "local", or its protocol (s3a is s3)."""
    if is_local(url):
        return "local"
    protocol = protocol_of(url)
    return "s3" if protocol == "s3a" else protocol


def find_under(context: tuple[str, StorageOptions | None], prefixes: list[str]
               ) -> list[ObjectInfo]:
    """Every object below each of ``prefixes``; ``context`` is ``(url, options)`` (a task)."""
    url, options = context
    fs, _ = filesystem(url, options)
    return [o for page in _find_pages(fs, url, prefixes, 100_000) for o in page]


def list_into_parts(context: tuple[str, StorageOptions | None, str, int],
                    group: tuple[int, list[str]]) -> list[str]:
    """List the prefixes of ``group`` (``(number, prefixes)``) and write every page of at
    most ``page_objects`` objects as a Parquet part under ``stage_url``; ``context`` is
    ``(url, options, stage_url, page_objects)`` (a task). Returns the parts' URLs."""
    url, options, stage_url, page_objects = context
    number, prefixes = group
    fs, _ = filesystem(url, options)
    parts = []
    for k, page in enumerate(_find_pages(fs, url, prefixes, page_objects)):
        part = join(stage_url, "listing", f"group-{number:05d}-{k:06d}.parquet")
        table = pa.table({"uri": [o.uri for o in page], "path": [o.path for o in page],
                          "size": pa.array([o.size for o in page], pa.int64())})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        write_bytes(part, buf.getvalue(), options)
        parts.append(part)
    return parts


def _read_part(part: str, options: StorageOptions | None) -> list[ObjectInfo]:
    table = pq.read_table(io.BytesIO(read_bytes(part, options)))
    return [ObjectInfo(u, p, s) for u, p, s in zip(
        table["uri"].to_pylist(), table["path"].to_pylist(), table["size"].to_pylist(),
        strict=True)]


def _find_pages(fs, url: str, prefixes: list[str], page_objects: int
                ) -> Iterator[list[ObjectInfo]]:
    """Every object below each of ``prefixes``, in pages of at most ``page_objects``."""
    page: list[ObjectInfo] = []
    for prefix in prefixes:
        try:
            for path, size in entries_below(fs, prefix):
                page.append(ObjectInfo(uri_of(url, path), path, size))
                if len(page) >= page_objects:
                    yield page
                    page = []
        except (OSError, ValueError) as e:
            if isinstance(e, StorageError):
                raise
            raise StorageError(f"cannot list {redact(uri_of(url, prefix))}: {e}") from e
    if page:
        yield page


def entries_below(fs, prefix: str) -> Iterator[tuple[str, int]]:
    """``(path, size)`` of every object below ``prefix``, without holding the listing: S3
    a page of keys per request, other filesystems a folder at a time."""
    if _is_s3(fs):
        for entry in _s3_entries(fs, prefix, delimiter=""):
            if entry["type"] == "file":
                yield entry["name"], entry["size"]
        return
    for _, _, files in fs.walk(prefix, detail=True):
        for info in files.values():  # keyed by base name; "name" is the path
            path = info["name"]
            # an empty "folder" (a directory marker, or what is left after deleting its
            # objects) may come back as the prefix itself: it is no object
            if info.get("type", "file") == "file" and path.rstrip("/") != prefix.rstrip("/"):
                yield path, int(info.get("size") or 0)


def _entries_in(fs, prefix: str) -> Iterator[dict]:
    """The entries (``name``, ``type``, ``size``) directly in ``prefix``."""
    if _is_s3(fs):
        yield from _s3_entries(fs, prefix, delimiter="/")
        return
    for entry in fs.ls(prefix, detail=True):
        yield {"name": entry["name"], "type": entry.get("type"),
               "size": int(entry.get("size") or 0)}


def _is_s3(fs) -> bool:
    return hasattr(fs, "call_s3") and "s3" in _protocols(fs)


def _protocols(fs) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def _s3_entries(fs, prefix: str, *, delimiter: str, max_keys: int = 1000) -> Iterator[dict]:
    """Keys (and, with a delimiter, common prefixes) under ``prefix`` ("bucket/key"), one
    ListObjectsV2 page (``max_keys``) at a time; s3fs' own listing would hold (and cache)
    them all."""
    bucket, _, key = prefix.strip("/").partition("/")
    kwargs = {"Bucket": bucket, "Prefix": f"{key}/" if key else "", "Delimiter": delimiter,
              "MaxKeys": max_keys}
    while True:
        out = fs.call_s3("list_objects_v2", **kwargs)
        for common in out.get("CommonPrefixes", []):
            yield {"name": f"{bucket}/{common['Prefix'].rstrip('/')}", "type": "directory",
                   "size": 0}
        for c in out.get("Contents", []):
            if c["Key"].endswith("/"):
                continue  # a directory marker: no object
            yield {"name": f"{bucket}/{c['Key']}", "type": "file", "size": int(c["Size"])}
        if not out.get("IsTruncated"):
            return
        kwargs["ContinuationToken"] = out["NextContinuationToken"]


def _walk(fs, url: str, root: str, *, target: int, prefixes: list[str],
          page_objects: int) -> Iterator[list[ObjectInfo]]:
    """Breadth-first listing from ``root`` until ``target`` prefixes (or the depth limit):
    yields the objects met on the way in pages; leaves in ``prefixes`` the prefixes to
    list recursively."""
    page: list[ObjectInfo] = []
    level = [root]
    for _ in range(_MAX_WALK_DEPTH):
        if len(level) >= target:
            break
        deeper = []
        for prefix in level:
            for entry in _entries_in(fs, prefix):
                name = entry["name"].rstrip("/")
                if name == prefix.rstrip("/"):
                    continue  # an empty "folder" listed as itself: no object
                if entry.get("type") == "directory":
                    deeper.append(name)
                else:
                    page.append(ObjectInfo(uri_of(url, name), name, int(entry["size"])))
                    if len(page) >= page_objects:
                        yield page
                        page = []
        level = deeper
        if not level:
            break
    if page:
        yield page
    prefixes.extend(level)


def _share(prefixes: list[str], groups: int) -> list[list[str]]:
    """``prefixes`` dealt round-robin into at most ``groups`` non-empty lists."""
    prefixes = sorted(prefixes)
    n = min(groups, len(prefixes))
    return [prefixes[i::n] for i in range(n)]
