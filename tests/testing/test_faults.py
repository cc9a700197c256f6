"""Fault drills: a stall drill holds every matching process (a condition may list values),
says so in its marker, and nothing happens once it is disarmed."""

from __future__ import annotations

from cohort.testing.faults import DRILL_ENV, armed, drill


def test_a_stall_drill_holds_every_matching_process_while_armed(tmp_path, monkeypatch):
    monkeypatch.setenv(DRILL_ENV, str(tmp_path / "drill.json"))
    marker = tmp_path / "stalled"
    with armed("prepare", str(marker), stall_s=0.01, series=["1.2", "1.3"]):
        for point, series in (("prepare", "1.2"), ("prepare", "1.3"), ("prepare", "1.2"),
                              ("prepare", "1.4"), ("finish", "1.2")):
            drill(point, series=series)  # returns: a stall never kills
    lines = marker.read_text().splitlines()
    assert lines == ["stalled at prepare {'series': '1.2'}",
                     "stalled at prepare {'series': '1.3'}",
                     "stalled at prepare {'series': '1.2'}"]
    drill("prepare", series="1.2")  # disarmed
    assert len(marker.read_text().splitlines()) == 3
