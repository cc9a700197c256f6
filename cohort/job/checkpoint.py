"""Which DST checkpoint the job uses, where it comes from, and what it says about itself.

With no ``--model``, the job uses the checkpoint shipped in the package (trained on
SYNTHETIC phantoms by the documented command in the README; not for clinical use).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from importlib import resources

from cohort.errors import ConfigError
from cohort.storage import StorageOptions, filesystem, is_local, read_bytes, redact

SHIPPED_NAME = "dst-small-synthetic.pt"

#: how to get a checkpoint `--model` accepts; ends every refusal of one
VALID_CHECKPOINTS = ("give a checkpoint written by `cohort train localization --data URL --out "
                     "DIR` (DIR/models/fold-<f>.pt) or by `cohort train shipped --out DIR --to "
                     "FILE.pt`, or leave --model out to use the shipped one")


def shipped_checkpoint() -> str:
    """Path of the checkpoint that ships with the package."""
    return str(resources.files("cohort.model") / "weights" / SHIPPED_NAME)


@dataclass(frozen=True)
class ModelInfo:
    """What the run manifest and the tables say about the model."""

    path: str  # a local file (fetched from object storage when needed)
    source: str  # what the user gave (redacted), or "shipped"
    name: str
    sha256: str
    trained_on: str  # "synthetic phantoms" or what the checkpoint says
    model_input: dict  # the ModelInputConfig fields it was trained with
    has_temperatures: bool
    max_len: int  # the longest sequence (slices) the model accepts
    # below it a landmark is low confidence (fitted on its validation split); None: the
    # checkpoint carries none and quantification falls back to QuantifyConfig's default
    confidence_threshold: float | None = None


_COPIES: dict[str, str] = {}  # URL -> this process's temporary copy, removed at exit


def _remove_copies() -> None:
    for path in _COPIES.values():
        with contextlib.suppress(OSError):
            os.remove(path)


atexit.register(_remove_copies)


def local_copy(url: str, options: StorageOptions | None = None) -> str:
    """A local path for ``url``: plain paths and file:// URLs as they are, object storage
    copied once per process to a temporary file that is removed when the process exits."""
    if is_local(url):
        path = filesystem(url, options)[1]
        if not os.path.isfile(path):
            raise ConfigError(f"model checkpoint {url} does not exist; {VALID_CHECKPOINTS}")
        return path
    if url not in _COPIES:
        data = read_bytes(url, options)
        fd, path = tempfile.mkstemp(suffix=".pt", prefix="cohort-model-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _COPIES[url] = path
    return _COPIES[url]


def verified_copy(url: str, options: StorageOptions | None, sha256: str | None,
                  what: str = "checkpoint") -> str:
    """`local_copy` of ``url``, refused unless it has the checksum the driver checked
    (``sha256``; None: not checked), so every node runs the same weights."""
    path = local_copy(url, options)
    if sha256 is not None:
        with open(path, "rb") as f:
            found = hashlib.sha256(f.read()).hexdigest()
        if found != sha256:
            raise ConfigError(f"the {what} on this node ({path}) has checksum {found[:12]}..., "
                              f"the driver checked {sha256[:12]}...; install the same cohort "
                              "version on every node")
    return path


def describe(url: str | None, options: StorageOptions | None = None) -> ModelInfo:
    """Load the checkpoint once (weights only) to check it and describe it.

    Raises:
        ConfigError: missing file, not a PyTorch checkpoint, pickled code or objects (never
            loaded), no cohort metadata, or a configuration this version cannot build; the
            message says which and how to make a valid checkpoint.
    """
    from cohort.model.calibration import threshold_from_metadata
    from cohort.model.dst import load_checkpoint

    source = "shipped" if url is None else redact(url)
    path = local_copy(url or shipped_checkpoint(), options)
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    try:
        model, meta = load_checkpoint(path)
    except ConfigError as e:  # name what the user gave, not a temporary copy
        raise ConfigError(f"{str(e).replace(path, source)}; {VALID_CHECKPOINTS}") from None
    synthetic = bool(meta.get("synthetic"))
    return ModelInfo(path=path, source=source, name=model.cfg.name, sha256=sha,
                     trained_on="synthetic phantoms" if synthetic else
                     str(meta.get("trained_on", "unknown")),
                     model_input=dict(meta.get("model_input") or {}),
                     has_temperatures=bool(meta.get("temperatures")),
                     max_len=int(model.cfg.max_len),
                     confidence_threshold=threshold_from_metadata(meta.get("confidence_threshold")))
