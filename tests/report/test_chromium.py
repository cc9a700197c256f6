"""The report as a browser shows it: headless Chromium (Debian's `chromium`, which
`./run tests` installs) renders the page from its folder; the screenshot is not blank, the
SYNTHETIC banner is on it, and every picture of the page loaded (each ``<img>`` notes its
decoded width in ``data-loaded`` once loaded, 0 when it failed)."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Chromium is not installed: the report's rendering test needs Debian's "
                "`chromium` (`./run tests` installs it when run as root; otherwise "
                "`sudo apt-get install chromium`)")


def _render(page, tmp_path, *args: str) -> str:
    result = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", *args, page.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_the_page_renders_with_every_picture(report, tmp_path):
    page, source = report
    shot = tmp_path / "shot.png"
    dom = _render(page, tmp_path, "--dump-dom", f"--screenshot={shot}",
                  "--window-size=1400,2400")
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (2400, 1400)
    colours = np.unique((pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2])
    assert pixels.std() > 20 and len(colours) > 200
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 80) & (pixels[..., 2] < 90)
    assert red[:400].sum() > 5000  # the SYNTHETIC banner, near the top
    images = re.findall(r"<img [^>]*>", dom)
    assert len(images) == source.count("<img ") >= 8  # six figures, two QC pictures
    widths = [re.search(r'data-loaded="(\d+)"', tag) for tag in images]
    failed = [tag for tag, w in zip(images, widths, strict=True) if not w or w[1] == "0"]
    assert not failed, failed
