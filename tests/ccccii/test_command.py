"""`cohort synth ccccii` and `cohort benchmark ccccii` as a user meets them."""

from __future__ import annotations

from cohort.cli import main


def test_synth_ccccii_writes_a_labelled_set(tmp_path, capsys):
    out = tmp_path / "set"
    assert (
        main(
            [
                "synth",
                "ccccii",
                "--out",
                str(out),
                "--patients",
                "3",
                "--matrix",
                "32",
                "--slices",
                "4",
                "6",
            ]
        )
        == 0
    )
    said = capsys.readouterr().out
    assert said.startswith("SYNTHETIC Clean-CC-CCII stand-in") and "(1 NCP" in said
    assert sorted(p.name for p in out.iterdir()) == [
        "CP",
        "NCP",
        "Normal",
        "_SUCCESS.json",
        "ground_truth.csv",
    ]


def test_benchmark_errors_are_one_clear_line(tmp_path, capsys):
    (tmp_path / "data" / "Normal").mkdir(parents=True)
    (tmp_path / "data" / "Normal" / "x.txt").write_text("x")
    args = ["benchmark", "ccccii", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cohort: error: no usable scan under {tmp_path / 'data'}")
    assert err.count("\n") == 1 and "misplaced_file" in err
    assert main([*args, "--models", "dst,vgg16"]) == 2
    assert "unknown model 'vgg16'" in capsys.readouterr().err
    assert main([*args, "--models", "resnet50_3d"]) == 2
    assert "depth ablation (Table V) needs a DST" in capsys.readouterr().err
