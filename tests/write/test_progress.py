"""The job's one progress display: a bar on a terminal, log lines elsewhere."""

from __future__ import annotations

import logging

from cohort.write.progress import Progress


def test_on_a_terminal_one_bar_counts_ok_and_failed(capsys):
    p = Progress(3, terminal=True)
    for status in ("ok", "error", "ok"):
        p.update(status)
    p.close()
    err = capsys.readouterr().err
    assert "cohort run" in err and "3/3" in err and "ok=2" in err and "failed=1" in err


def test_off_a_terminal_a_line_every_n_series_and_at_the_end(caplog):
    caplog.set_level(logging.INFO, logger="cohort.progress")
    p = Progress(5, every=2, terminal=False)
    for _ in range(5):
        p.update("ok")
    p.close()
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" series")[0] for line in lines] == ["2 / 5", "4 / 5", "5 / 5"]
    assert "about" in lines[0] and "left" in lines[0]  # time left while running
    assert "(5 ok, 0 failed)" in lines[-1] and "left" not in lines[-1]
