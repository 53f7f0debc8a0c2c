"""The report page in a real headless Chromium (tests/browser.py): from a file:// URL with no console error and
no network request, every image decoded (the evaluation's confusion matrix and wrong-image thumbnails included),
a non-blank screenshot, and a phone-sized screen without sideways scrolling of the page."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from browser import browser_fixture
from PIL import Image

browser = browser_fixture()


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """The page as `cnnlab train` and `cnnlab report` make it: with the run's own evaluation on its test split."""
    from cnnlab.eval import evaluate_run
    from cnnlab.train import train
    from cnnlab.viz.report import build_report

    tmp = tmp_path_factory.mktemp("report-browser")
    train(epochs=2, threads=1, quiet=True, limit_per_class=20, out=str(tmp / "run"))
    return build_report(tmp / "run", evaluate=evaluate_run, out=tmp / "report.html")


IMAGES = "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.getBoundingClientRect().right])"


@pytest.mark.parametrize("viewport", [(1280, 900), (390, 844)], ids=["desktop", "phone"])
def test_the_report_loads_offline_and_every_image_decodes(browser, page, tmp_path, viewport):
    browser.open(page, viewport=viewport)
    images = browser.js(f"return {IMAGES};")
    alts = [alt for alt, *_ in images]
    thumbs = [a for a in alts if a.startswith("test image ")]  # the most confidently wrong test images
    assert thumbs and alts == ["training curves", "confusion matrix", *thumbs, "first-layer filters",
                               "Grad-CAM example", "occlusion example"]
    assert all(complete and width > 0 for _, complete, width, _ in images), images
    # Each picture decodes to real pixels (drawn to a canvas: a truncated PNG paints nothing below its header).
    spread = browser.js("""return Array.from(document.images).map(img => {
        const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        const d = g.getImageData(0, Math.floor(c.height / 2), c.width, Math.ceil(c.height / 2)).data;
        let lo = 255, hi = 0;
        for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); }
        return d[3] === 0 ? -1 : hi - lo; });""")
    assert all(s > 50 for s in spread), spread
    width = browser.js("return window.innerWidth;")
    assert width == viewport[0]
    assert browser.js("return document.documentElement.scrollWidth;") <= width  # no sideways page scroll
    assert all(right <= width for *_, right in images)  # pictures shrink to the screen
    # thumbnails are shown larger than their 32x32 pixels, several to a row even on a phone
    boxes = browser.js("return Array.from(document.querySelectorAll('#confident-wrong img')).map("
                       "i => [i.naturalWidth, i.getBoundingClientRect().width, i.getBoundingClientRect().top]);")
    assert len(boxes) == len(thumbs) and all(shown > 2 * natural for natural, shown, _ in boxes), boxes
    assert len(boxes) < 3 or boxes[0][2] == boxes[2][2], boxes  # the first three share a row
    shot = np.asarray(Image.open(io.BytesIO(browser.screenshot(tmp_path / "shot.png").read_bytes())).convert("L"))
    assert shot.std() > 20 and len(np.unique(shot)) > 16  # text and pictures, not a blank screen
    assert browser.console_errors() == []
    assert browser.network_requests() == []


def test_wide_tables_scroll_inside_their_box_on_a_phone(browser, page):
    browser.open(page, viewport=(390, 844))
    box = browser.js("const t = document.getElementById('layer-table'); const s = t.parentElement;"
                     "return [t.scrollWidth, s.clientWidth, getComputedStyle(s).overflowX];")
    assert box[2] == "auto" and box[1] <= 390
