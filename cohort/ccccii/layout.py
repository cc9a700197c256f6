"""The Clean-CC-CCII folder tree: which scans there are, of which patient and class.

Two layouts, mixed freely under one root:

    <root>/<class>/<patient_id>/<scan_id>/<slice image>   PNG or JPEG slices, one per file,
                                                          ordered by the number in the name
    <root>/<class>/<patient_id>/<scan_id>.npy | .npz      one preprocessed array per scan
                                                          (see `cohort.ccccii.images`)

with ``<class>`` one of ``NCP``, ``CP``, ``Normal`` (exact spelling). Patient IDs are unique
within a class folder only (the public data set numbers patients per class), so the patient
key is class-aware: ``"<class>/<patient_id>"``; the scan key is
``"<class>/<patient_id>/<scan_id>"``. Cross-validation splits by that patient key.

Nothing is dropped silently: every folder or file that cannot be used becomes a `Problem`
(path, code, what is wrong and what would work). Only the listing is read here; slices that
cannot be decoded or differ in size are found, and reported the same way, when the cache is
built (`cohort.ccccii.cache`).
"""

from __future__ import annotations

import logging
import posixpath
import re
from dataclasses import dataclass

from cohort.errors import ConfigError, ErrorCode
from cohort.storage import StorageOptions, filesystem, redact

logger = logging.getLogger(__name__)

CLASSES = ("NCP", "CP", "Normal")  # label index = position here
SLICE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npy", ".npz")
# files at the root that describe the data set and are no scan
ROOT_FILES = ("_SUCCESS.json", "README.md", "README.txt", "LICENSE", "ground_truth.csv")
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class ScanSource:
    """One scan of the tree: its keys, label and files (slices in order, or one array)."""

    scan_key: str  # "<class>/<patient_id>/<scan_id>"
    patient_key: str  # "<class>/<patient_id>": patient IDs repeat across class folders
    label: int  # index into CLASSES
    files: tuple[str, ...]  # URLs: slice images in depth order, or a single array file
    kind: str  # "slices" or "array"

    @property
    def class_name(self) -> str:
        return CLASSES[self.label]


@dataclass(frozen=True)
class Problem:
    """Something in the tree that was left out, and why."""

    path: str  # URL of the folder or file
    code: str  # an ErrorCode value
    detail: str  # what is wrong and what would work


def slice_number(name: str) -> int | None:
    """The number a slice file name orders by: the last run of digits in its stem
    (``IM0012.png`` -> 12, ``slice_3_b10.jpg`` -> 10); None without digits."""
    numbers = _NUMBER.findall(posixpath.splitext(posixpath.basename(name))[0])
    return int(numbers[-1]) if numbers else None


def discover_scans(
    root_url: str, options: StorageOptions | None = None
) -> tuple[list[ScanSource], list[Problem]]:
    """Every usable scan under ``root_url`` and every problem met on the way (see module).

    Raises:
        ConfigError: ``root_url`` does not exist or is not a folder.
    """
    fs, root = filesystem(root_url, options)
    root = root.rstrip("/")
    if not fs.isdir(root):
        raise ConfigError(
            f"{redact(root_url)} is not a folder; give the folder that holds "
            f"the class folders {', '.join(CLASSES)}"
        )
    scheme = root_url.split("://")[0] + "://" if "://" in root_url else ""
    entries = fs.find(root, withdirs=True, detail=True)
    tree: dict[tuple[str, ...], str] = {}  # path parts below root -> "file" or "directory"
    for path, info in entries.items():
        rel = path[len(root) :].strip("/")
        if rel:
            tree[tuple(rel.split("/"))] = info["type"]
    problems: list[Problem] = []
    scans: list[ScanSource] = []
    children: dict[tuple[str, ...], list[str]] = {}
    for parts in tree:
        children.setdefault(parts[:-1], []).append(parts[-1])

    def where(*parts: str) -> str:
        return scheme + posixpath.join(root, *parts)

    def report(code: ErrorCode, detail: str, *parts: str) -> None:
        problems.append(Problem(where(*parts), code.value, detail))

    for top in sorted(children.get((), [])):
        if tree[(top,)] != "directory":
            if top not in ROOT_FILES:
                report(
                    ErrorCode.MISPLACED_FILE,
                    "a file beside the class folders is not "
                    f"part of any scan; class folders are {', '.join(CLASSES)}",
                    top,
                )
            continue
        if top not in CLASSES:
            report(
                ErrorCode.UNKNOWN_CLASS,
                f"folder {top!r} is not a class of the benchmark; "
                f"rename it to one of {', '.join(CLASSES)} (exact spelling) or move it "
                "out of the data folder",
                top,
            )
            continue
        found = _class_scans(top, children, tree, report)
        if not found:
            report(
                ErrorCode.EMPTY_FOLDER,
                f"class folder {top} holds no usable scan; expected "
                f"{top}/<patient_id>/<scan_id>/<slice>.png (or .jpg), or "
                f"{top}/<patient_id>/<scan_id>.npy",
                top,
            )
        scans += [
            ScanSource(
                key,
                "/".join(key.split("/")[:2]),
                CLASSES.index(top),
                tuple(where(*p) for p in files),
                kind,
            )
            for key, files, kind in found
        ]
    for c in CLASSES:
        if (c,) not in tree:
            logger.warning("no class folder %s under %s", c, redact(root_url))
    for p in problems:
        logger.warning("left out %s [%s]: %s", redact(p.path), p.code, p.detail)
    return scans, problems


def _class_scans(cls: str, children, tree, report) -> list[tuple[str, list[tuple], str]]:
    """(scan key, file parts in order, kind) of one class folder's scans."""
    found = []
    for patient in sorted(children.get((cls,), [])):
        if tree[(cls, patient)] != "directory":
            report(
                ErrorCode.MISPLACED_FILE,
                "a file directly in a class folder belongs to no "
                f"patient; expected {cls}/<patient_id>/<scan_id>/<slices>",
                cls,
                patient,
            )
            continue
        for scan in sorted(children.get((cls, patient), [])):
            parts = (cls, patient, scan)
            key = "/".join(parts)
            if tree[parts] == "file":
                stem, suffix = posixpath.splitext(scan)
                if suffix.lower() in ARRAY_SUFFIXES:
                    found.append(("/".join((cls, patient, stem)), [parts], "array"))
                else:
                    report(
                        ErrorCode.NOT_IMAGE,
                        "a file directly in a patient folder must be a "
                        f"scan array ({', '.join(ARRAY_SUFFIXES)}); slice images belong in "
                        "a scan folder",
                        *parts,
                    )
                continue
            files = _scan_slices(parts, children, tree, report)
            if files is not None:
                found.append((key, files, "slices"))
        if not children.get((cls, patient)):
            report(ErrorCode.EMPTY_FOLDER, "patient folder holds no scan", cls, patient)
    return found


def _scan_slices(parts: tuple[str, ...], children, tree, report) -> list[tuple] | None:
    """The slice files of one scan folder in depth order, or None (reported) if unusable."""
    slices = []
    for name in sorted(children.get(parts, [])):
        if tree[(*parts, name)] == "directory":
            report(
                ErrorCode.MISPLACED_FILE,
                "a folder inside a scan folder is not read; slices sit directly in the scan folder",
                *parts,
                name,
            )
        elif posixpath.splitext(name)[1].lower() in SLICE_SUFFIXES:
            slices.append(name)
        else:
            report(
                ErrorCode.NOT_IMAGE,
                "not a slice image (by its name); only "
                f"{', '.join(SLICE_SUFFIXES)} files are read, this one is left out of its "
                "scan",
                *parts,
                name,
            )
    if len(slices) < 2:
        report(
            ErrorCode.TOO_FEW_SLICES,
            f"{len(slices)} slice image(s); a scan needs at least 2",
            *parts,
        )
        return None
    numbers = {n: slice_number(n) for n in slices}
    unnumbered = [n for n, k in numbers.items() if k is None]
    if unnumbered:
        report(
            ErrorCode.UNORDERED_SLICES,
            f"slice file(s) without a number to order by, e.g. "
            f"{unnumbered[0]!r}; name slices by their position (0001.png, ...)",
            *parts,
        )
        return None
    if len(set(numbers.values())) < len(slices):
        dup = sorted(n for n in slices if list(numbers.values()).count(numbers[n]) > 1)
        report(
            ErrorCode.UNORDERED_SLICES,
            f"slice files share a number ({', '.join(dup[:4])}); "
            "the order of the slices is ambiguous",
            *parts,
        )
        return None
    return [(*parts, n) for n in sorted(slices, key=numbers.__getitem__)]
