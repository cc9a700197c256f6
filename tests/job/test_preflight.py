"""Checks `cohort run` makes before it writes anything, about its inputs: an index is run on
alone, and with several archives each one must exist; a refused run leaves nothing behind."""

from __future__ import annotations

import pytest

from cohort.config import DiscoveryConfig, IndexConfig
from cohort.discover import index_cohort
from cohort.errors import ConfigError, StorageError
from cohort.job.preflight import index_of_inputs
from cohort.pipeline import RunConfig, run_cohort
from cohort.synth.config import SynthConfig
from cohort.synth.heads import generate_cohort
from cohort.write.identity import IdentityConfig


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """Two small archives and the published index of the first."""
    root = tmp_path_factory.mktemp("preflight")
    for name, seed in (("a", 1), ("b", 2)):
        generate_cohort(SynthConfig(patients=1, seed=seed, matrix=32, localizer_p=0.0,
                                    second_series_p=0.0, followup_p=0.0, workers=1),
                        str(root / name))
    index_cohort(str(root / "a" / "dicom"), str(root / "index-a"),
                 IndexConfig(discovery=DiscoveryConfig(executor="local")))
    return root


def test_an_index_is_run_on_alone(archives):
    a, b, index = (str(archives / "a" / "dicom"), str(archives / "b" / "dicom"),
                   str(archives / "index-a"))
    assert index_of_inputs((index,), None) == index
    assert index_of_inputs((a,), None) is None
    assert index_of_inputs((a, b), None) is None
    with pytest.raises(ConfigError, match=f"input {index} is an index written by `cohort "
                                          "index`.*run on that index alone"):
        index_of_inputs((b, index), None)


def _config(model) -> RunConfig:
    return RunConfig(model=str(model), segment=False, identity=IdentityConfig(keep_ids=True))


def test_run_refuses_an_index_among_several_inputs_and_leaves_nothing(
        archives, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="is an index written by `cohort index`"):
        run_cohort([str(archives / "index-a"), str(archives / "b" / "dicom")], str(out),
                   _config(tiny_checkpoint))
    assert not out.exists()


def test_run_names_a_missing_input_before_any_work(archives, tiny_checkpoint, tmp_path):
    out, gone = tmp_path / "out", tmp_path / "gone"
    with pytest.raises(StorageError, match=f"input {gone} does not exist"):
        run_cohort((str(archives / "a" / "dicom"), str(gone)), str(out),
                   _config(tiny_checkpoint))
    assert not out.exists()  # no owner file, no index: nothing was claimed
