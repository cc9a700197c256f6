"""Listing every object under a URL, whatever the folder layout or file names.

The driver walks the first levels of the tree (one ``ls`` per prefix) until it has enough
prefixes to share out, then the prefixes are listed recursively (``find``) in parallel
tasks. Each object keeps its size from the listing, so header reads need no extra request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

from cohort.errors import StorageError
from cohort.storage import (
    StorageOptions,
    check_endpoint,
    filesystem,
    is_local,
    protocol_of,
    redact,
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
    """Every object (file) under ``url``, sorted by URL.

    Args:
        url: a folder, a prefix (``s3://bucket/prefix``) or a single object.
        options: storage endpoint and credentials.
        parallel_map: ``f(fn, context, items) -> [fn(context, item) ...]`` running on
            workers (e.g. `cohort.discover.parallel.Runner.map`); None lists here.
        slots: how many workers share the listing.

    Raises:
        StorageError: nothing exists under ``url``, or the storage cannot be listed.
    """
    fs, root = filesystem(url, options)
    check_input(url, options)
    try:
        if fs.isfile(root):
            return [ObjectInfo(uri_of(url, root), root, int(fs.size(root)))]
        found, prefixes = _walk(fs, url, root, target=max(1, slots) * _PREFIXES_PER_SLOT)
    except (OSError, ValueError) as e:
        if isinstance(e, StorageError):
            raise
        raise StorageError(f"cannot list {redact(url)}: {e}") from e
    if prefixes:
        groups = _share(prefixes, max(1, slots) * _PREFIXES_PER_SLOT)
        context = (url, options)
        results = (parallel_map(find_under, context, groups) if parallel_map
                   else [find_under(context, g) for g in groups])
        for part in results:
            found.extend(part)
    objects = sorted({o.path: o for o in found}.values())
    if not objects:
        raise StorageError(f"input {redact(url)} holds no objects; check the URL")
    logger.info("listed %d objects (%d bytes) under %s", len(objects),
                sum(o.size for o in objects), redact(url))
    return objects


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


def find_under(context: tuple[str, StorageOptions | None], prefixes: list[str]
               ) -> list[ObjectInfo]:
    """Every object below each of ``prefixes``; ``context`` is ``(url, options)`` (a task)."""
    url, options = context
    fs, _ = filesystem(url, options)
    out = []
    for prefix in prefixes:
        try:
            entries = fs.find(prefix, detail=True)
        except (OSError, ValueError) as e:
            raise StorageError(f"cannot list {redact(uri_of(url, prefix))}: {e}") from e
        for path, info in entries.items():
            # an empty "folder" (a directory marker, or what is left after deleting its
            # objects) may come back as the prefix itself: it is no object
            if info.get("type", "file") == "file" and path.rstrip("/") != prefix.rstrip("/"):
                out.append(ObjectInfo(uri_of(url, path), path, int(info.get("size") or 0)))
    return out


def _walk(fs, url: str, root: str, *, target: int) -> tuple[list[ObjectInfo], list[str]]:
    """Breadth-first ``ls`` from ``root`` until ``target`` prefixes (or the depth limit):
    the objects met on the way, and the prefixes left to list recursively."""
    files: list[ObjectInfo] = []
    prefixes = [root]
    for _ in range(_MAX_WALK_DEPTH):
        if len(prefixes) >= target:
            break
        deeper = []
        for prefix in prefixes:
            for entry in fs.ls(prefix, detail=True):
                name = entry["name"].rstrip("/")
                if name == prefix.rstrip("/"):
                    continue  # an empty "folder" listed as itself: no object
                if entry.get("type") == "directory":
                    deeper.append(name)
                else:
                    files.append(ObjectInfo(uri_of(url, name), name, int(entry.get("size") or 0)))
        prefixes = deeper
        if not prefixes:
            break
    return files, prefixes


def _share(prefixes: list[str], groups: int) -> list[list[str]]:
    """``prefixes`` dealt round-robin into at most ``groups`` non-empty lists."""
    prefixes = sorted(prefixes)
    n = min(groups, len(prefixes))
    return [prefixes[i::n] for i in range(n)]
