"""The 3-D CNN baselines and the model zoo: shapes, the paper's compute, checkpoints."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
import torch

from cohort.errors import ConfigError
from cohort.model import cnn3d, zoo
from cohort.model.compute import count_macs, count_parameters, measure
from cohort.model.dst import DepthSequenceTransformer

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize(
    "name",
    ["resnet_tiny_3d", "densenet_tiny_3d", "dst-tiny", "dst-tiny+blocks_0", "dst-tiny+blocks_1"],
)
def test_every_network_gives_class_logits_and_learns(name):
    torch.manual_seed(0)
    net = zoo.build_network(name, max_len=64)
    x = torch.rand(2, 1, 32, 32, 12)
    y = torch.tensor([0, 2])
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    losses = []
    for _ in range(4):
        loss = torch.nn.functional.cross_entropy(zoo.class_logits(net(x, torch.tensor([12, 9]))), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert zoo.class_logits(net(x)).shape == (2, 3)
    assert losses[-1] < losses[0]


def test_dst_names_map_to_configurations():
    assert zoo.dst_config("dst").n_blocks == 8 and zoo.dst_config("dst").width == 1024
    assert zoo.dst_config("dst-tiny+blocks_0").n_blocks == 0
    assert zoo.dst_config("dst-small+blocks_3").n_blocks == 3
    assert zoo.dst_config("dst-tiny+no_attention").mixer == "conv"
    assert zoo.dst_config("dst-tiny+blocks_0").name == "dst-tiny+blocks_0"
    for bad, needle in [
        ("vgg16", "unknown model 'vgg16'"),
        ("resnet50_3d+blocks_0", "for the DST only"),
        ("dst+deeper", "unknown ablation 'deeper'"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            zoo.check_name(bad)


def test_baselines_cost_what_the_paper_reports():
    # Table III at 128 x 128 x 64: ResNet50_3D 40.89 G, DenseNet121_3D 21.45 G
    x = torch.zeros(1, 1, 128, 128, 64)
    with torch.device("meta"):
        resnet = cnn3d.build_model("resnet50_3d")
        densenet = cnn3d.build_model("densenet121_3d")
    assert count_macs(resnet, x.to("meta")) / 1e9 == pytest.approx(40.89, rel=0.02)
    assert count_macs(densenet, x.to("meta")) / 1e9 == pytest.approx(21.45, rel=0.02)
    assert count_parameters(resnet) / 1e6 == pytest.approx(46.16, abs=0.01)
    assert count_parameters(densenet) / 1e6 == pytest.approx(11.25, abs=0.01)


def test_measure_reports_every_figure():
    c = measure(lambda: zoo.build_network("resnet_tiny_3d"), (32, 32, 16), repeats=1)
    assert c.input_shape == "32x32x16" and c.device.startswith("cpu")
    assert c.gmac == pytest.approx(
        count_macs(zoo.build_network("resnet_tiny_3d"), torch.zeros(1, 1, 32, 32, 16)) / 1e9
    )
    # MONAI's ResNet has 4 stages and a stem as wide as its first stage, so the old 3-stage
    # tiny (14,763 parameters) cannot be built; this one has 15,463
    assert c.params_m == pytest.approx(0.015463)
    assert c.latency_ms > 0 and c.peak_memory_mb >= 0


def test_checkpoints_round_trip_and_refuse_pickled_code(tmp_path):
    for name in ("densenet_tiny_3d", "dst-tiny"):
        net = zoo.build_network(name, max_len=64).eval()
        buf = io.BytesIO()
        zoo.save_checkpoint(buf, net, fold=2)
        buf.seek(0)
        again, meta = zoo.load_checkpoint(buf)
        assert meta == {"fold": 2} and type(again) is type(net)
        x = torch.rand(1, 1, 32, 32, 8)
        assert torch.equal(zoo.class_logits(again.eval()(x)), zoo.class_logits(net(x)))
    assert isinstance(
        zoo.load_checkpoint(_saved(tmp_path, "dst-tiny"))[0], DepthSequenceTransformer
    )
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": cnn3d.FORMAT, "x": print}, protocol=2))
    with pytest.raises(ConfigError, match="cannot be loaded as plain weights"):
        cnn3d.load_checkpoint(evil)


def _saved(tmp_path, name):
    path = tmp_path / f"{name}.pt"
    zoo.save_checkpoint(path, zoo.build_network(name, max_len=64))
    return str(path)


def _probe(shape) -> torch.Tensor:
    """A fixed input, the same on every machine and torch version."""
    n = 1
    for d in shape:
        n *= d
    return torch.sin(0.37 * torch.arange(n, dtype=torch.float32)).reshape(shape)


@pytest.mark.parametrize("name", ["cnn3d-v1-resnet.pt", "cnn3d-v1-densenet.pt"])
def test_checkpoints_of_our_own_modules_give_the_same_logits_in_monai(name):
    """The fixtures were written by cohort's own ResNet / DenseNet modules (before MONAI,
    format cohort.cnn3d/1) with the logits they gave for `_probe` in their metadata: the
    same weights in MONAI's networks give the same logits, so the networks are the same."""
    net, meta = zoo.load_checkpoint(str(FIXTURES / name))
    assert isinstance(net, cnn3d.CNN3DClassifier) and meta["written_by"] == "cohort.cnn3d/1"
    with torch.no_grad():
        logits = net.eval()(_probe(meta["input_shape"]))
    torch.testing.assert_close(logits, torch.tensor(meta["logits"]), rtol=1e-5, atol=1e-6)
    again, _ = cnn3d.load_checkpoint(FIXTURES / name)  # directly, and saved again as /2
    buf = io.BytesIO()
    cnn3d.save_checkpoint(buf, again)
    buf.seek(0)
    assert torch.load(buf, weights_only=True)["format"] == cnn3d.FORMAT


def test_old_checkpoints_that_monai_cannot_build_are_refused_clearly():
    # the old tiny ResNet had 3 stages and a stem wider than its first stage
    buf = io.BytesIO()
    torch.save({"format": "cohort.cnn3d/1", "state_dict": {}, "meta": {},
                "config": {"name": "resnet_tiny_3d", "arch": "resnet", "stem_channels": 8,
                           "stem_kernel": 3, "stem_depth_stride": 1, "blocks": [1, 1, 1],
                           "widths": [4, 8, 16], "growth": 32, "bn_size": 4, "n_classes": 3,
                           "dropout": 0.0}}, buf)
    buf.seek(0)
    with pytest.raises(ConfigError, match="MONAI's ResNet has 4 stages.*retrain it"):
        zoo.load_checkpoint(buf)
