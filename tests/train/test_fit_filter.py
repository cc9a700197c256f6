"""`cohort train component-filter` on a cohort too small to fit a filter on: a clear refusal
that says what would work, and nothing written."""

from cohort.cli import main
from cohort.job.segmenter_checkpoint import describe_segmenter


def test_a_cohort_too_small_is_refused_with_what_would_work(varied_cohort, tmp_path, capsys):
    root, _ = varied_cohort
    out = tmp_path / "segmenter-filter.pt"
    code = main(["train", "component-filter", "--segmenter",
                 str(describe_segmenter(None).path), "--data", str(root),
                 "--out", str(tmp_path / "work"), "--to", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and not out.exists()
    assert "too few candidates to fit the component filter" in err
    assert "80 patients" in err
