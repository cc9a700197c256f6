"""A read-only file over one object that fetches byte ranges on demand, and counts them.

DICOM headers sit at the start of a file and are a few kilobytes long; the pixels after
them are most of the object. `RangeReader` lets pydicom parse a header as if it had the
whole file while only the bytes it touches are fetched: a first block (64 KiB by default),
then blocks four times larger each time the parser reads past what is there, up to a cap.
On object storage each block is one ranged GET (``fs.cat_file(path, start, end)``).
"""

from __future__ import annotations

import io

from cohort.errors import ErrorCode, SeriesError


class RangeReader(io.RawIOBase):
    """Sequential-friendly, seekable reader of the object ``path`` of ``size`` bytes on ``fs``.

    Args:
        fs: the fsspec filesystem that serves the object.
        path: the object's path inside ``fs``.
        size: the object's size in bytes, as listed.
        first_block: bytes fetched by the first request.
        max_bytes: never fetch past this offset; a header that needs more raises
            `SeriesError` (UNREADABLE_HEADER).
        uri: the object's URL, for messages.
        prefetched: the object's first ``first_block`` bytes, when already fetched.

    Attributes:
        bytes_read: bytes fetched from storage so far.
        requests: range requests made so far.
        short_read: a read ended early inside a data element (the object is truncated).
    """

    def __init__(self, fs, path: str, size: int, *, first_block: int = 65536,
                 max_bytes: int = 64 * 1024**2, uri: str | None = None,
                 prefetched: bytes | None = None) -> None:
        super().__init__()
        self._fs = fs
        self._path = path
        self._size = int(size)
        self._next_block = max(1, int(first_block))
        self._max_bytes = int(max_bytes)
        self._uri = uri or path
        self._buf = bytearray()  # the object's bytes [0, len(_buf))
        self._pos = 0
        self.bytes_read = 0
        self.requests = 0
        self.short_read = False
        if prefetched is not None:  # the first block, fetched with others in one batch
            self._buf += prefetched
            self.requests, self.bytes_read = 1, len(prefetched)
            self._next_block = max(self._next_block, len(self._buf))
            if len(prefetched) < min(first_block, self._size):
                self._size = len(prefetched)  # shorter than listed (changed meanwhile)

    @property
    def size(self) -> int:
        """The object's size (corrected when storage delivered fewer bytes than listed)."""
        return self._size

    @property
    def at_end(self) -> bool:
        """True when the position is at the end of the object."""
        return self._pos >= self._size

    def fetched(self, start: int, stop: int) -> bool:
        """True when bytes [start, stop) are already here (no request needed)."""
        return 0 <= start <= stop <= len(self._buf)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        pos = base + offset
        if pos < 0:
            raise OSError(f"negative seek position {pos} in {self._uri}")
        self._pos = pos
        return pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = max(0, self._size - self._pos)
        end = min(self._pos + n, self._size)
        if end > len(self._buf):
            self._fill(end)
            end = min(end, len(self._buf))
        data = bytes(self._buf[self._pos:end]) if end > self._pos else b""
        got = len(data)
        # pydicom asks for 8 bytes (the next tag) or 1 byte (a peek) at the end of a data
        # set; any other short answer means the object ends inside a data element.
        if got < n and not (got == 0 and n in (1, 8)):
            self.short_read = True
        self._pos += got
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def read_at(self, start: int, n: int) -> bytes:
        """``n`` bytes from offset ``start`` (fewer at the end), without moving the position.

        Bytes beyond what is cached are fetched in one request and not cached.
        """
        stop = min(start + n, self._size)
        if stop <= start:
            return b""
        if self.fetched(start, stop):
            return bytes(self._buf[start:stop])
        data = self._fetch(start, stop)
        return data

    def peek(self, start: int, n: int) -> bytes:
        """``n`` bytes from offset ``start`` (fewer at the end), fetched into the cache as
        `read` fetches them, without moving the position or marking a short read.

        Raises:
            SeriesError: UNREADABLE_HEADER past ``max_bytes``; IO_ERROR from storage.
        """
        stop = min(start + n, self._size)
        if stop <= start:
            return b""
        if stop > len(self._buf):
            self._fill(stop)
        return bytes(self._buf[start:min(stop, len(self._buf))])

    def _fetch(self, start: int, stop: int) -> bytes:
        """Bytes [start, stop) from storage, in one request."""
        try:
            data = self._fs.cat_file(self._path, start=start, end=stop)
        except (OSError, ValueError) as e:
            raise SeriesError(ErrorCode.IO_ERROR,
                              f"storage did not deliver bytes {start}-{stop}: "
                              f"{type(e).__name__}: {e}", uri=self._uri) from e
        self.requests += 1
        self.bytes_read += len(data)
        return data

    def _fill(self, end: int) -> None:
        """Fetch from the end of the cache to at least ``end`` (one request)."""
        start = len(self._buf)
        if end > self._max_bytes:
            raise SeriesError(
                ErrorCode.UNREADABLE_HEADER,
                f"the header runs past {self._max_bytes} bytes without reaching the pixel "
                "data; the file is probably malformed (raise max_header_bytes if not)",
                uri=self._uri)
        stop = min(self._size, max(end, start + self._next_block), self._max_bytes)
        data = self._fetch(start, stop)
        if len(data) < stop - start:  # the object is shorter than listed (changed meanwhile)
            self._size = start + len(data)
        self._buf += data
        self._next_block = max(self._next_block, len(self._buf))  # the total doubles
