"""A real Orthanc with its DICOMweb plugin on loopback, for tests (Debian's ``orthanc`` and
``orthanc-dicomweb``): a free port, a temporary storage folder and configuration, basic
authentication; stopped by its own process id."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
USER, PASSWORD = "cohort", "orthanc-test-password"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """``with Orthanc() as server: server.dicomweb`` is the DICOMweb root URL."""

    def __init__(self) -> None:
        binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        if not os.path.exists(binary) or not os.path.exists(PLUGIN):
            raise RuntimeError("Orthanc or its DICOMweb plugin is not installed: apt-get "
                               "install -y orthanc orthanc-dicomweb")
        self.binary = binary
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dicomweb = f"{self.url}/dicom-web"
        self.dir = tempfile.mkdtemp(prefix="orthanc-")
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Orthanc:
        config = {"Name": "cohort-test", "StorageDirectory": f"{self.dir}/db",
                  "IndexDirectory": f"{self.dir}/db", "HttpPort": self.port,
                  "DicomPort": _free_port(), "RemoteAccessAllowed": False,
                  "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
                  "Plugins": [PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
        path = f"{self.dir}/orthanc.json"
        with open(path, "w") as f:
            json.dump(config, f)
        self.log = open(f"{self.dir}/orthanc.log", "wb")  # noqa: SIM115 (closed in __exit__)
        self.process = subprocess.Popen([self.binary, path], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        auth = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        auth.add_password(None, self.url, USER, PASSWORD)
        opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(auth))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({self.process.returncode}); see "
                                   f"{self.dir}/orthanc.log")
            try:
                opener.open(f"{self.url}/system", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError(f"Orthanc did not answer on {self.url} within 30 s")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
