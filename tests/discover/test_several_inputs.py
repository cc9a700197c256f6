"""One index over several inputs: the archive's series spread over two folders, one series
with its slices under both, give the index of the whole archive in one folder; every input
is checked before any work, and inputs that cannot make one index are refused."""

from __future__ import annotations

import json

import pytest

from cohort.cli import main
from cohort.config import DiscoveryConfig, IndexConfig
from cohort.discover import build_index, index_cohort, summarize
from cohort.discover.listing import check_inputs
from cohort.errors import ConfigError, StorageError
from cohort.testing.archives import split_archive

from .conftest import relative_series, series_bytes, write_series

LOCAL = IndexConfig(discovery=DiscoveryConfig(executor="local", files_per_task=16))


@pytest.fixture(scope="module")
def two_folders(small_cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp("several")
    a, b = root / "site-a", root / "site-b"
    folder, moved = split_archive(small_cohort / "dicom", a, b)
    return {"a": a, "b": b, "split": folder, "moved": moved, "root": root}


@pytest.fixture(scope="module")
def whole(small_cohort):
    """The index of the archive in one folder, for comparison."""
    return build_index(str(small_cohort / "dicom"), LOCAL)


def test_two_folders_make_the_index_of_the_whole_archive(two_folders, whole, small_cohort):
    a, b = two_folders["a"], two_folders["b"]
    out = two_folders["root"] / "index"
    result = index_cohort([str(a), str(b)], str(out), LOCAL)
    got = relative_series(result.manifest, [a, b])
    assert got == relative_series(whole.manifest, [small_cohort / "dicom"])
    assert result.stats.objects == whole.stats.objects == result.objects.num_rows
    assert result.objects["uri"].to_pylist() == sorted(result.objects["uri"].to_pylist())
    # the split series is one series, its slices from both folders in anatomical order
    split = [r for r in result.manifest.to_pylist() if r["kind"] == "series"
             and any(two_folders["split"] in f for f in r["files"])]
    assert len(split) == 1
    files = split[0]["files"]
    under_b = [f for f in files if f.startswith(str(b) + "/")]
    assert len(under_b) == two_folders["moved"] >= 10 and len(files) == split[0]["n_files"]
    assert split[0]["status"] == "selected"
    # the index records every input
    marker = json.loads((out / "_SUCCESS.json").read_text())
    assert marker["inputs"] == [str(a), str(b)]
    assert marker["input"] == f"{a}, {b}"
    assert result.inputs == (str(a), str(b))
    assert summarize(result).splitlines()[0].endswith(f"under {a}, {b}")


def test_a_missing_input_is_named_before_any_work(two_folders, tmp_path):
    a = two_folders["a"]
    out = tmp_path / "index"
    with pytest.raises(StorageError, match=f"input {tmp_path / 'nowhere'} does not exist"):
        index_cohort([str(a), str(tmp_path / "nowhere")], str(out), LOCAL)
    assert not out.exists()


def test_inputs_that_cannot_make_one_index_are_refused(two_folders, tmp_path):
    a, b = two_folders["a"], two_folders["b"]
    inner = next(p for p in a.iterdir())
    with pytest.raises(ConfigError, match=f"input {inner} lies inside {a}"):
        check_inputs([str(b), str(inner), str(a)])
    with pytest.raises(ConfigError, match=f"input {a}/ is given twice"):
        check_inputs([str(a), str(b), str(a) + "/"])
    with pytest.raises(ConfigError, match="lie on different storages \\(local, s3\\)"):
        check_inputs([str(a), "s3://bucket/ct"])
    assert check_inputs(str(a)) == (str(a),)  # one URL as a str, as before
    assert check_inputs([str(a), str(b)]) == (str(a), str(b))


def test_cohort_index_takes_several_inputs(tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    write_series(one / "s", series_bytes(20, series_uid="1.2.9.1.2", study_uid="1.2.9.1"))
    write_series(two / "s", series_bytes(20, series_uid="1.2.9.2.2", study_uid="1.2.9.2"))
    (two / "notes.txt").write_text("hello\n")
    out = tmp_path / "index"
    assert main(["index", str(one), str(two), "--out", str(out), "--executor", "local"]) == 0
    printed = capsys.readouterr().out
    assert "cohort index: 41 objects" in printed and f"under {one}, {two}" in printed
    assert "selected 2, not_selected 0, failed 0" in printed
    assert main(["index", str(one), str(tmp_path / "gone"), "--out", str(out),
                 "--executor", "local"]) == 1
    assert f"input {tmp_path / 'gone'} does not exist" in capsys.readouterr().err
