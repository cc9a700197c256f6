"""Pushing a run's SEG and SR to a DICOMweb server (STOW-RS), with dicomweb-client.

Credentials come from the environment (``COHORT_DICOMWEB_USER``,
``COHORT_DICOMWEB_PASSWORD``), never from the command line, and never reach logs or
messages. A server that cannot be reached stops the push with an error naming the URL;
the local files are never touched.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass

import pydicom

from cohort.errors import ConfigError
from cohort.storage import StorageOptions, read_bytes

logger = logging.getLogger(__name__)

USER_ENV = "COHORT_DICOMWEB_USER"
PASSWORD_ENV = "COHORT_DICOMWEB_PASSWORD"


class DicomWebError(ConfigError):
    """The DICOMweb server refused or could not be reached (the message names the URL)."""


@dataclass(frozen=True)
class DicomWebConfig:
    url: str  # the service root, e.g. http://pacs:8042/dicom-web
    timeout_s: float = 30.0

    def __repr__(self) -> str:  # no credentials here; the URL only
        return f"DicomWebConfig(url={self.url!r})"


def client(config: DicomWebConfig):
    """A dicomweb-client client with the environment's credentials (basic auth)."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    if not config.url.startswith(("http://", "https://")):
        raise DicomWebError(f"--dicomweb {config.url!r} is not an http(s) URL; give the "
                            "server's DICOMweb root, e.g. http://pacs:8042/dicom-web")
    session = requests.Session()
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    if user:
        session.auth = (user, password or "")
    return DICOMwebClient(url=config.url, session=session)


def push(config: DicomWebConfig, urls: list[str],
         storage: StorageOptions | None = None) -> int:
    """Store the DICOM files at ``urls`` (STOW-RS), one study at a time; their number.

    Raises:
        DicomWebError: the server cannot be reached or refuses an instance.
    """
    import requests

    by_study: dict[str, list] = {}
    for url in urls:
        ds = pydicom.dcmread(io.BytesIO(read_bytes(url, storage)))
        by_study.setdefault(str(ds.StudyInstanceUID), []).append(ds)
    web = client(config)
    stored = 0
    for study, datasets in by_study.items():
        try:
            web.store_instances(datasets=datasets, study_instance_uid=study)
        except requests.exceptions.ConnectionError as e:
            raise DicomWebError(f"DICOMweb server {config.url} cannot be reached "
                                f"({type(e).__name__}); the results stay in the run folder, "
                                "push again when it is up") from None
        except requests.exceptions.HTTPError as e:
            code = e.response.status_code if e.response is not None else "?"
            hint = f" (check {USER_ENV} / {PASSWORD_ENV})" if code in (401, 403) else ""
            raise DicomWebError(f"DICOMweb server {config.url} refused the store (HTTP "
                                f"{code}){hint}; the results stay in the run folder") from None
        stored += len(datasets)
    logger.info("stored %d DICOM instance(s) at %s", stored, config.url)
    return stored
