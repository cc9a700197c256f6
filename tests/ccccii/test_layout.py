"""The Clean-CC-CCII loader on small folder trees written here, bad cases included."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cohort.ccccii.cache import InputConfig, build_cache
from cohort.ccccii.images import read_scan, resize
from cohort.ccccii.layout import discover_scans, slice_number
from cohort.errors import ConfigError


def _png(path, value: int, size=(20, 16), mode="L", fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.full(size[::-1], value, dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    path.write_bytes(buf.getvalue())


def _scan(root, key, n=3, **kw):
    for k in range(n):
        _png(root / key / f"{k}.png", 10 * (k + 1), **kw)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "data"
    _scan(root, "NCP/1/100")  # slices 0.png 1.png 2.png
    for k in (2, 10, 1):  # numeric order, not text order: 1, 2, 10
        _png(root / "NCP/1/101" / f"IM{k}.jpg", 20 * k, fmt="JPEG")
    _scan(root, "CP/1/200", mode="RGB")  # patient 1 again, another class: another patient
    _scan(root, "CP/2/201")
    (root / "Normal/7").mkdir(parents=True)
    np.save(root / "Normal/7/300.npy", np.arange(4 * 12 * 12, dtype=np.uint8).reshape(4, 12, 12))
    # the bad cases
    (root / "Normal" / "8").mkdir(parents=True)  # empty patient folder
    _scan(root, "COVID/3/400")  # not one of the three classes
    _png(root / "CP/3/500/0.png", 5)  # one slice only
    _scan(root, "CP/4/600")
    (root / "CP/4/600/notes.txt").write_text("not an image")  # reported, scan kept
    _scan(root, "CP/5/700")
    (root / "CP/5/700/3.png").write_bytes(b"this is not a png")  # unreadable: scan left out
    _scan(root, "NCP/6/800")
    _png(root / "NCP/6/800/3.png", 9, size=(24, 16))  # mixed size: scan left out
    (root / "stray.txt").write_text("x")
    return root


def test_slice_numbers_order_slices():
    assert slice_number("IM0012.png") == 12
    assert slice_number("slice_3_b10.jpg") == 10
    assert slice_number("a.png") is None


def test_layout_keys_are_class_aware_and_bad_entries_are_reported(tree):
    scans, problems = discover_scans(str(tree))
    keys = {s.scan_key: s for s in scans}
    assert sorted(keys) == [
        "CP/1/200",
        "CP/2/201",
        "CP/4/600",
        "CP/5/700",
        "NCP/1/100",
        "NCP/1/101",
        "NCP/6/800",
        "Normal/7/300",
    ]
    assert keys["CP/1/200"].patient_key == "CP/1" != keys["NCP/1/100"].patient_key == "NCP/1"
    assert keys["CP/1/200"].label == 1 and keys["Normal/7/300"].kind == "array"
    assert [f.rsplit("/", 1)[1] for f in keys["NCP/1/101"].files] == [
        "IM1.jpg",
        "IM2.jpg",
        "IM10.jpg",
    ]
    assert len(keys["CP/4/600"].files) == 3
    got = {(p.path.replace(str(tree) + "/", ""), p.code) for p in problems}
    assert got == {
        ("COVID", "unknown_class"),
        ("CP/3/500", "too_few_slices"),
        ("CP/4/600/notes.txt", "not_image"),
        ("Normal/8", "empty_folder"),
        ("stray.txt", "misplaced_file"),
    }
    assert all(p.detail for p in problems)


def test_cache_leaves_out_unreadable_and_mixed_size_scans(tree, tmp_path):
    scans, _ = discover_scans(str(tree))
    index, problems = build_cache(scans, str(tmp_path / "cache"), InputConfig(size=16, depth=8))
    assert sorted(index["scan_key"]) == [
        "CP/1/200",
        "CP/2/201",
        "CP/4/600",
        "NCP/1/100",
        "NCP/1/101",
        "Normal/7/300",
    ]
    got = {(p.path.replace(str(tree) + "/", ""), p.code) for p in problems}
    assert got == {("CP/5/700/3.png", "not_image"), ("NCP/6/800/3.png", "inconsistent_geometry")}
    row = index.set_index("scan_key").loc["NCP/1/101"]
    assert (row.depth, row.source_depth, row.source_rows, row.source_columns) == (8, 3, 16, 20)
    x = np.load(tmp_path / "cache" / row.path)
    assert x.shape == (16, 16, 8) and x.dtype == np.float16
    # reused as it is when nothing changed
    again, problems2 = build_cache(scans, str(tmp_path / "cache"), InputConfig(size=16, depth=8))
    assert again.equals(index) and len(problems2) == 2


def test_array_layout_reads_depth_first_arrays_and_checks_npz_labels(tree):
    scans, _ = discover_scans(str(tree))
    normal = next(s for s in scans if s.scan_key == "Normal/7/300")
    v = read_scan(normal)
    assert v.shape == (12, 12, 4) and v[0, 1, 0] == pytest.approx(1 / 255)
    np.savez(tree / "Normal/7/301.npz", volume=np.zeros((5, 10, 10), np.float32), label="CP")
    scans, _ = discover_scans(str(tree))
    bad = next(s for s in scans if s.scan_key == "Normal/7/301")
    with pytest.raises(Exception, match="label_mismatch"):
        read_scan(bad)


def test_resize_is_trilinear_to_the_requested_shape_or_native_depth():
    v = np.random.default_rng(0).random((40, 30, 20)).astype(np.float32)
    assert resize(v, 16, 8).shape == (16, 16, 8)
    assert resize(v, 16, None).shape == (16, 16, 20)
    assert resize(v, 16, None, max_len=8).shape == (16, 16, 7)  # every 3rd slice
    flat = np.full((8, 8, 4), 0.25, np.float32)
    assert np.allclose(resize(flat, 4, 2), 0.25)


def test_nothing_usable_stops_with_a_clear_message(tmp_path):
    from cohort.ccccii.benchmark import BenchmarkConfig
    from cohort.ccccii.command import benchmark_ccccii

    root = tmp_path / "bad"
    (root / "NCP").mkdir(parents=True)
    _scan(root, "covid/1/1")
    cfg = BenchmarkConfig(models=("resnet_tiny_3d",), ablation_blocks=())
    with pytest.raises(ConfigError) as e:
        benchmark_ccccii(str(root), str(tmp_path / "out"), cfg)
    msg = str(e.value)
    assert msg.startswith(f"no usable scan under {root}")
    assert "unknown_class" in msg and "empty_folder" in msg
    with pytest.raises(ConfigError, match="is not a folder"):
        discover_scans(str(tmp_path / "missing"))
