"""Who writes an output folder (`cohort run --out`), and with which identity keys.

Two small files at the root of the output, beside ``index/`` and ``runs/``:

    _identity.json   how patient and study keys are made: ``salted`` with a fingerprint of
                     the salt (an HMAC of a fixed text under the salt, never the salt), or
                     ``keep_ids``. A run with another salt or mode would give one patient two
                     keys; it stops before any work, saying what differs.
    _owner.json      the run that writes here now (host, process and its start time, run
                     id, heartbeat), removed when it ends. A second run on the same output
                     stops while that process lives; the owner file of a run that was killed
                     (its process gone, a zombie not yet reaped, or its id now another
                     process's) is taken over, and its unpublished run folder is recovered
                     (`cohort.write.recovery`). A run on another host (a
                     cluster's head pod restarted elsewhere) can't see that process: it takes
                     over once the owner's heartbeat, renewed every `HEARTBEAT_S`, is older
                     than `LEASE_S`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from cohort.errors import ConfigError
from cohort.storage import StorageOptions, filesystem, join, read_bytes, redact, write_bytes
from cohort.write.identity import SALT_ENV, IdentityConfig

logger = logging.getLogger(__name__)

IDENTITY_FILE = "_identity.json"
OWNER_FILE = "_owner.json"
#: a running job renews its owner file's heartbeat this often (seconds)
HEARTBEAT_S = 60.0
#: an owner on another host whose heartbeat is older than this (seconds) was killed
LEASE_S = 10 * 60.0
_FINGERPRINT_TEXT = b"cohort: fingerprint of the identity salt, v1"


def identity_record(identity: IdentityConfig) -> dict:
    """What ``_identity.json`` holds for a resolved identity (never the salt itself)."""
    if identity.salt:
        digest = hmac.new(identity.salt.encode(), _FINGERPRINT_TEXT, hashlib.sha256)
        return {"mode": "salted", "salt_fingerprint": digest.hexdigest()[:16]}
    return {"mode": "keep_ids", "salt_fingerprint": None}


def _describe(record: dict) -> str:
    if record.get("mode") == "keep_ids":
        return "identifiers as they are (--keep-ids)"
    return f"keys salted with the salt of fingerprint {record.get('salt_fingerprint')}"


def recorded_identity(out_url: str, options: StorageOptions | None = None) -> dict | None:
    fs, path = filesystem(join(out_url, IDENTITY_FILE), options)
    if not fs.exists(path):
        return None
    return json.loads(read_bytes(join(out_url, IDENTITY_FILE), options))


def check_identity(out_url: str, identity: IdentityConfig,
                   options: StorageOptions | None = None) -> bool:
    """Refuse a run whose keys would not match the keys already written under ``out_url``.

    Returns:
        True when ``out_url`` records an identity (and it matches), False when it records
        none (a new output, or one written before cohort recorded it).

    Raises:
        ConfigError: another salt or another mode, naming both and what to do.
    """
    found = recorded_identity(out_url, options)
    if found is None:
        return False
    want = identity_record(identity)
    if found.get("mode") == want["mode"] and found.get("salt_fingerprint") == \
            want["salt_fingerprint"]:
        return True
    raise ConfigError(
        f"{redact(out_url)} holds results with {_describe(found)}; this run would write "
        f"{_describe(want)}, so one patient would get two keys. Run again with the salt "
        f"used before (--salt or {SALT_ENV}) or the same --keep-ids choice, or give a new "
        "--out")


def mismatched_keys(pairs: list[tuple[str | None, str | None]]) -> int:
    """How many (written key, key this run computes) pairs differ (None pairs skipped)."""
    return sum(1 for old, new in pairs if old is not None and new is not None and old != new)


def record_identity(out_url: str, identity: IdentityConfig,
                    options: StorageOptions | None = None) -> None:
    write_bytes(join(out_url, IDENTITY_FILE),
                json.dumps(identity_record(identity), indent=1).encode(), options)


@dataclass
class Ownership:
    """This process's claim on an output folder; `release` gives it up."""

    out_url: str
    run_id: str
    options: StorageOptions | None
    took_over: dict | None  # the owner record of a dead run this claim replaced
    record: dict | None = None  # what this claim wrote
    _stop: threading.Event | None = None
    _thread: threading.Thread | None = None

    def beat(self) -> None:
        """Renew the heartbeat (while the owner file is still ours)."""
        if self.record is None:
            return
        try:
            current = json.loads(read_bytes(join(self.out_url, OWNER_FILE), self.options))
        except (OSError, ValueError):
            return
        if current.get("run_id") != self.run_id:
            return
        self.record = {**self.record, "heartbeat": time.time()}
        write_bytes(join(self.out_url, OWNER_FILE), json.dumps(self.record, indent=1).encode(),
                    self.options)

    def keep_alive(self, every_s: float = HEARTBEAT_S) -> None:
        """Renew the heartbeat every ``every_s`` seconds in a thread until `release`."""
        if self._stop is not None:
            return
        self._stop = threading.Event()

        def loop(stop: threading.Event) -> None:
            while not stop.wait(every_s):
                try:
                    self.beat()
                except Exception as e:  # noqa: BLE001  (a missed beat must not stop the job)
                    logger.warning("could not renew the owner file's heartbeat: %s", e)

        self._thread = threading.Thread(target=loop, args=(self._stop,), daemon=True,
                                        name="cohort-owner-heartbeat")
        self._thread.start()

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=30)  # no beat may write the file back
        fs, path = filesystem(join(self.out_url, OWNER_FILE), self.options)
        try:
            current = json.loads(read_bytes(join(self.out_url, OWNER_FILE), self.options))
        except (OSError, ValueError):
            return
        if current.get("run_id") == self.run_id:
            fs.rm_file(path)


def _alive(pid: int, started: float | None = None) -> bool:
    """Whether process ``pid`` of this host still is the run that wrote an owner file: it
    exists, is not a zombie (killed, not yet reaped by its parent) and, when the file
    recorded it, started when that run's process did (not a later process given the id)."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(process.create_time() - started) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # exists, owned by someone else
        return True


def _started() -> float | None:
    """When this process started (seconds since the epoch), for `_alive`."""
    import psutil

    try:
        return psutil.Process().create_time()
    except psutil.Error:
        return None


def claim(out_url: str, run_id: str, options: StorageOptions | None = None,
          lease_s: float = LEASE_S) -> Ownership:
    """Take the output folder for this run.

    Raises:
        ConfigError: another run that still lives (same host, process alive) or that runs
            on another host and renewed its heartbeat within ``lease_s`` writes there (or
            one of an older version, without a heartbeat).
    """
    host = socket.gethostname()
    previous = None
    fs, path = filesystem(join(out_url, OWNER_FILE), options)
    if fs.exists(path):
        try:
            previous = json.loads(read_bytes(join(out_url, OWNER_FILE), options))
        except (OSError, ValueError):
            previous = {}
        same_host = previous.get("host") == host
        pid = int(previous.get("pid") or 0)
        started = previous.get("pid_started")
        started = float(started) if isinstance(started, int | float) else None
        if same_host and pid and pid != os.getpid() and _alive(pid, started):
            raise ConfigError(
                f"another cohort run (process {pid}, run {previous.get('run_id')}) is writing "
                f"to {redact(out_url)}; wait for it to finish, or give another --out")
        beat = previous.get("heartbeat")
        silent = time.time() - float(beat) if isinstance(beat, int | float) else None
        if not same_host and (silent is None or silent < lease_s):
            since = ("" if silent is None else
                     f"; its last heartbeat was {silent:.0f} s ago, and a run silent for "
                     f"{lease_s:.0f} s is taken over")
            raise ConfigError(
                f"a cohort run on host {previous.get('host')} (run {previous.get('run_id')}, "
                f"started {previous.get('started')}) claims {redact(out_url)}{since}; wait "
                f"for it, or, if it was killed, delete {redact(join(out_url, OWNER_FILE))} and "
                "run again")
    record = {"host": host, "pid": os.getpid(), "pid_started": _started(), "run_id": run_id,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "heartbeat": time.time()}
    write_bytes(join(out_url, OWNER_FILE), json.dumps(record, indent=1).encode(), options)
    return Ownership(out_url, run_id, options, previous, record)
