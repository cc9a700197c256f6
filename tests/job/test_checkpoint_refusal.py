"""`cohort run --model` refuses what is not a cohort DST checkpoint, says what the file is and
how to make a valid one, never runs pickled code, and never repeats PyTorch's advice to load
with weights_only=False."""

from __future__ import annotations

import pickle

import pytest
import torch

from cohort.cli import main
from cohort.job.checkpoint import VALID_CHECKPOINTS, describe
from cohort.model.dst import build_model


class RunsCode:
    """What a malicious checkpoint carries: unpickling it would create ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class PlainObject:
    def __init__(self):
        self.weights = torch.zeros(2)


def _text(path, marker):
    path.write_text("epoch 12: val MAE 1.3 slices\n")


def _code(path, marker):
    torch.save({"format": "cohort.dst/1", "x": RunsCode(marker)}, path)


def _object(path, marker):
    torch.save({"model": PlainObject()}, path)


def _plain_pickle(path, marker):
    with open(path, "wb") as f:
        pickle.dump({"model": PlainObject()}, f)


def _state_dict(path, marker):
    torch.save(build_model("tiny").state_dict(), path)


def _foreign_config(path, marker):
    torch.save({"format": "cohort.dst/1", "config": {"name": "tiny", "colour": "red"},
                "state_dict": {}}, path)


@pytest.mark.parametrize("write, says", [
    (_text, "it is not a PyTorch checkpoint at all: it begins with b'epoch 12'"),
    (_code, "it is a pickle that names Python code or classes (io.open)"),
    (_object, "it is a pickle that names Python code or classes "
              f"({__name__}.PlainObject)"),
    (_plain_pickle, "it is a pickle of Python objects, not of tensors and plain values"),
    (_state_dict, "it holds bare weights (a state_dict) without cohort's metadata"),
    (_foreign_config, "has a model configuration this version of cohort cannot build"),
])
def test_model_refusal_says_what_and_how_never_weights_only_false(write, says, tmp_path,
                                                                  capsys):
    ckpt, marker = tmp_path / "model.pt", tmp_path / "code-ran"
    write(ckpt, marker)
    (tmp_path / "out").mkdir()
    code = main(["run", str(tmp_path / "dicom"), "--out", str(tmp_path / "out"),
                 "--model", str(ckpt), "--keep-ids"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("cohort: error: ") and str(ckpt) in err
    assert says in err
    assert err.rstrip().endswith(VALID_CHECKPOINTS)
    assert "weights_only=False" not in out + err and "will likely succeed" not in out + err
    assert "Traceback" not in err
    assert not marker.exists()


def test_refusal_is_not_chained_to_pytorchs_advice(tmp_path):
    from cohort.errors import ConfigError

    ckpt = tmp_path / "evil.pt"
    _code(ckpt, tmp_path / "code-ran")
    with pytest.raises(ConfigError, match="Pickled code is never loaded") as info:
        describe(str(ckpt))
    assert info.value.__cause__ is None and info.value.__suppress_context__
    inner = info.value.__context__  # load_checkpoint's refusal, itself not chained to torch's
    assert inner.__cause__ is None and inner.__suppress_context__
    assert not (tmp_path / "code-ran").exists()
