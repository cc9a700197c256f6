"""Checks `cohort run` makes before it writes anything: where input and output lie, the
masks folder, what Ray can schedule, and whether the keys already written match this run's
identity."""

from __future__ import annotations

import logging
import os

from cohort.errors import ConfigError
from cohort.job.resources import Request, cluster_nodes, resource_problems
from cohort.job.rows import text_value
from cohort.storage import StorageOptions, filesystem, is_local, join, redact
from cohort.write.identity import IdentityConfig, pseudonym
from cohort.write.ownership import mismatched_keys
from cohort.write.runs import published_runs

logger = logging.getLogger(__name__)


def inside(url: str, folder: str, options: StorageOptions | None) -> bool:
    """Whether ``url`` is ``folder`` or lies under it (same storage)."""
    from cohort.storage import protocol_of

    if protocol_of(url) != protocol_of(folder) and not (is_local(url) and is_local(folder)):
        return False
    a, b = filesystem(url, options)[1].rstrip("/"), filesystem(folder, options)[1].rstrip("/")
    return a == b or a.startswith(b + "/")


def index_of(input_url: str, options: StorageOptions | None) -> str | None:
    """The published index the job reads as it is: ``input_url`` itself or its ``index/``
    folder; None when ``input_url`` is an archive the job indexes first."""
    from cohort.discover.manifest import MANIFEST_FILE, MARKER
    from cohort.storage import is_published

    for candidate in (input_url, join(input_url, "index")):
        fs, path = filesystem(join(candidate, MANIFEST_FILE), options)
        if fs.exists(path) and is_published(candidate, options, name=MARKER):
            return candidate
    return None


def index_of_inputs(inputs: tuple[str, ...], options: StorageOptions | None) -> str | None:
    """`index_of` the job's inputs: the published index when the one input is one; None
    when the inputs are archives the job indexes first.

    Raises:
        ConfigError: one of several inputs is an index (or an output holding one): an
            index is run on alone.
    """
    if len(inputs) == 1:
        return index_of(inputs[0], options)
    for url in inputs:
        found = index_of(url, options)
        if found is not None:
            raise ConfigError(
                f"input {redact(url)} is an index written by `cohort index` (or an output "
                f"holding one, {redact(found)}); several inputs must all be DICOM archives "
                "(folders or prefixes), indexed together by this run: run on that index "
                "alone, or give the archives it indexed")
    return None


def check_written_keys(out_url: str, patient_ids: dict[str, str | None],
                       identity: IdentityConfig, options: StorageOptions | None) -> None:
    """For outputs written before cohort recorded its identity file: the patient keys
    already published must be the keys this run computes for the same series.

    Raises:
        ConfigError: they differ (another salt, or --keep-ids against a salt).
    """
    if not published_runs(out_url, options):
        return
    from cohort.write.runs import latest_series, read_table

    written = latest_series(read_table(out_url, "series", options,
                                       columns=("run_id", "series_key", "patient_key")))
    written = written.to_pandas()
    ids = patient_ids
    pairs = [(key, pseudonym(text_value(ids.get(s)), identity))
             for s, key in zip(written["series_key"], written["patient_key"], strict=True)
             if s in ids]
    bad = mismatched_keys(pairs)
    if bad:
        raise ConfigError(
            f"{redact(out_url)} holds patient keys made with another salt or identity mode "
            f"({bad} of {len(pairs)} series differ from the keys this run computes); run "
            f"again with the salt used before (--salt or COHORT_SALT) or the same --keep-ids "
            "choice, or give a new --out")


def check_masks(masks_url: str, series_uids: list[str],
                options: StorageOptions | None) -> None:
    """Refuse a masks folder in which no series to process has its mask (a naming mistake
    would otherwise cost a whole run of ``mask_missing`` rows); warn when some lack one.

    Raises:
        ConfigError: none of ``series_uids`` has ``<uid>.nii.gz`` in the folder.
    """
    fs, path = filesystem(masks_url, options)
    names = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)}
    missing = [u for u in series_uids if f"{u}.nii.gz" not in names]
    if len(missing) == len(series_uids):
        found = ", ".join(sorted(names)[:3]) or "nothing"
        raise ConfigError(
            f"none of the {len(series_uids)} series to process has a mask in --masks "
            f"{redact(masks_url)}: masks are named <SeriesInstanceUID>.nii.gz, e.g. "
            f"{series_uids[0]}.nii.gz; the folder holds {len(names)} entries ({found}"
            f"{', ...' if len(names) > 3 else ''})")
    if missing:
        logger.warning("%d of %d series have no mask in %s: they keep their landmarks, without "
                       "volumes (mask_missing; --mask-errors makes them error rows)",
                       len(missing), len(series_uids), redact(masks_url))


def check_resources(request: Request) -> None:
    """Refuse a job that the connected Ray cannot schedule (it would wait forever).

    Raises:
        ConfigError: on a Ray started here (fixed resources). On a cluster (``RAY_ADDRESS``)
            the autoscaler may still add nodes: a warning instead.
    """
    problems = resource_problems(request, cluster_nodes())
    if not problems:
        return
    if os.environ.get("RAY_ADDRESS"):
        for p in problems:
            logger.warning("%s; waiting for the cluster's autoscaler to add such nodes", p)
        return
    raise ConfigError("; ".join(problems))


def only_ours(out_url: str, options: StorageOptions | None) -> bool:
    """Whether ``out_url`` holds nothing but what a refused run of ours may have written
    (an index, the identity and owner files): no published run."""
    return not published_runs(out_url, options)
