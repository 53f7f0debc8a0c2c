"""The run page (`cnnlab explain RUN_DIR IMAGE`) in a real headless Chromium (tests/browser.py): tiles per
stage, probabilities equal to PyTorch's, a tile opening beside its kernels, keys, phone and desktop, no
network request and no console error. The runs are trained once for the module (test_explain_run.make_runs)."""

import pytest
import torch
from browser import browser_fixture
from test_explain_run import make_runs

from matplotlib import colormaps

from cnnlab.explain.page import write_page
from cnnlab.explain.run_page import RunPageConfig, run_page
from cnnlab.runs import Run

browser = browser_fixture()
PHONE, DESKTOP = (390, 844), (1280, 900)
# The channels of each stage, from the papers: LeNet-5's C1/S2 6, C3/S4 16, C5 120; ResNet-18's 64, then
# 64, 128, 256, 512 (He et al., Table 1). The page shows the first 64 of each.
CHANNELS = {"grey": [6, 16, 120], "rgb": [64, 64, 128, 256, 512]}


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    root = tmp_path_factory.mktemp("run-pages")
    runs = make_runs(root)
    for kind, r in runs.items():
        r["page"] = write_page(root / f"{kind}.html", run_page(RunPageConfig(str(r["run"]), str(r["image"]))))
    return runs


def _clean(browser):
    assert browser.console_errors() == []
    assert browser.network_requests() == []


def _percent(p: float) -> str:
    return f"{100 * p:.2f}%"


def _oracle_probs(r) -> torch.Tensor:
    """`run.model("final")` on the image as the run's test split holds it, normalised by hand."""
    run = Run.open(r["run"])
    image = run.dataset().test.images[r["index"]]
    pre = run.preprocess
    x = ((image.double() / 255 - torch.tensor(pre.mean).view(-1, 1, 1)) / torch.tensor(pre.std).view(-1, 1, 1))
    with torch.no_grad():
        return torch.softmax(run.model("final")(x.float()[None]).double(), 1)[0]


@pytest.mark.parametrize("kind", ["grey", "rgb"])
def test_tiles_per_stage_and_probabilities(browser, pages, kind):
    r = pages[kind]
    browser.open(r["page"], DESKTOP)
    counts = browser.js("return [...document.querySelectorAll('section.stage')].map("
                        "s => s.querySelectorAll('.tile').length)")
    assert counts == [min(c, 64) for c in CHANNELS[kind]]
    for s, c in enumerate(CHANNELS[kind]):
        note = browser.text(f"#stage-note-{s}")
        assert note.startswith(f"Showing {min(c, 64)} of {c} channels") and ("the first 64" in note) == (c > 64)
    probs = _oracle_probs(r)
    run = Run.open(r["run"])
    rows = browser.js("return [...document.querySelectorAll('#probs li')].map(li => "
                      "[li.dataset.class, Number(li.dataset.p), li.querySelector('.pct').textContent])")
    assert len(rows) == run.num_classes
    assert [c for c, _, _ in rows] == [run.classes[i] for i in probs.argsort(descending=True)]
    for cls, p, text in rows:
        assert abs(p - probs[run.classes.index(cls)].item()) < 1e-6 and text == _percent(p)
    top = probs.argmax().item()
    assert browser.text("#verdict") == f"Predicted: {run.classes[top]} ({_percent(probs[top].item())})"
    _clean(browser)


def test_a_tile_opens_enlarged_beside_its_kernels(browser, pages):
    from selenium.webdriver.common.action_chains import ActionChains

    r = pages["grey"]
    model = Run.open(r["run"]).model("final")
    browser.open(r["page"], DESKTOP)
    assert browser.find("#detail-body").get_attribute("hidden") is not None
    tile = browser.find("#tile-1-3")  # LeNet-5's C3/S4 stage, channel 3
    tile.click()
    assert browser.text("#detail-title") == "stage1 · channel 3"
    tile_src = browser.js("return arguments[0].querySelector('img').src", tile)
    assert browser.find("#detail-img").get_attribute("src") == tile_src
    big = browser.js("return document.getElementById('detail-img').getBoundingClientRect().width")
    assert big >= 4 * tile.size["width"]
    detail = browser.js("const r = document.getElementById('detail').getBoundingClientRect(); return [r.left, r.right]")
    flow = browser.js("const r = document.getElementById('flow-col').getBoundingClientRect(); return r.right")
    assert detail[0] >= flow and detail[1] <= DESKTOP[0]  # beside the stages, inside the window
    # The kernels of features.3 (C3) feeding channel 3: one 5x5 grid per input channel, 6 of them.
    grids = browser.js("return [...document.querySelectorAll('#filters canvas')].map(c => c.dataset.input)")
    assert grids == [str(i) for i in range(6)]
    assert browser.text("#filter-caption").startswith("features.3, the last convolution in stage1 (5×5")
    # Point at row 1, column 3 of the kernel on input 2 (not on the diagonal: rows and columns cannot swap).
    canvas = browser.find("#filter-2")
    w, h = canvas.size["width"], canvas.size["height"]
    ActionChains(browser.driver).move_to_element_with_offset(canvas, (3.5 / 5 - 0.5) * w, (1.5 / 5 - 0.5) * h).perform()
    shown = browser.text("#filter-value")
    assert shown.startswith("input channel 2, row 1, column 3: w = ")
    value = float(shown.split("= ")[1].replace("−", "-"))
    scale = model.features[3].weight[:16].abs().max().item()  # the colour scale: the 16 channels shown
    weight = model.features[3].weight[3, 2, 1, 3].item()
    assert abs(value - weight) <= 5e-3 * scale
    # The cell's colour is matplotlib's RdBu_r at the weight's place on ±scale.
    rgb = browser.js("const c = arguments[0], k = c.width / 5; "
                     "return [...c.getContext('2d').getImageData(3.5 * k, 1.5 * k, 1, 1).data].slice(0, 3)", canvas)
    index = round((weight / scale + 1) / 2 * 255)
    expected = [round(v * 255) for v in colormaps["RdBu_r"](index / 255)[:3]]
    assert max(abs(a - b) for a, b in zip(rgb, expected)) <= 12, (rgb, expected)
    # Keys: → next channel, ↓ the next stage (same channel), Esc closes.
    from selenium.webdriver.common.keys import Keys

    browser.keys(Keys.ARROW_RIGHT)
    assert browser.text("#detail-title") == "stage1 · channel 4"
    assert browser.js("return document.activeElement.id") == "tile-1-4"
    browser.keys(Keys.ARROW_DOWN)
    assert browser.text("#detail-title") == "stage2 · channel 4"
    assert len(browser.js("return document.querySelectorAll('#filters canvas')")) == 16  # C5 sees 16 maps: all drawn
    browser.keys(Keys.END)
    assert browser.text("#detail-title") == "stage2 · channel 63"
    browser.keys(Keys.ESCAPE)
    assert browser.find("#detail-body").get_attribute("hidden") is not None
    assert browser.js("return document.querySelectorAll('.tile.selected').length") == 0
    _clean(browser)


def test_rgb_kernels_are_capped_and_said_so(browser, pages):
    browser.open(pages["rgb"]["page"], DESKTOP)
    browser.find("#tile-3-10").click()  # stage3 = layer3: layer3.1.conv2 has 256 inputs per channel
    assert browser.text("#detail-title") == "stage3 · channel 10"
    caption = browser.text("#filter-caption")
    assert caption.startswith("layer3.1.conv2") and "(256 inputs)" in caption and "the first 16 are drawn" in caption
    assert len(browser.js("return document.querySelectorAll('#filters canvas')")) == 16
    assert "3 × 16×16" in browser.text("#input-dims") and "zero-padded by 2" in browser.text("#input-text")
    _clean(browser)


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_renders_on_phone_and_desktop(browser, pages, viewport):
    browser.open(pages["rgb"]["page"], viewport)
    width = browser.js("return window.innerWidth")
    assert browser.js("return document.documentElement.scrollWidth") <= width
    for sel in ("#input-panel", "#stage-0", "#stage-4", "#probs-panel", "#tile-0-63"):
        box = browser.js("const r = arguments[0].getBoundingClientRect(); return [r.left, r.right, r.width]",
                         browser.find(sel))
        assert box[2] > 0 and box[0] >= 0 and box[1] <= width + 1, (sel, box)
    tile = browser.find("#tile-4-20")
    browser.js("arguments[0].scrollIntoView({block: 'center'})", tile)
    tile.click()
    detail = browser.js("const r = document.getElementById('detail').getBoundingClientRect(); "
                        "return [r.left, r.right, r.top, r.bottom]")
    assert detail[0] >= 0 and detail[1] <= width + 1 and 0 <= detail[2] < detail[3] <= viewport[1] + 1
    if viewport == PHONE:  # the details come up as a sheet from the bottom; the tile stays in view above it
        t = browser.js("const r = arguments[0].getBoundingClientRect(); return [r.top, r.bottom]", tile)
        assert t[0] >= 0 and t[1] <= detail[2] + 1, (t, detail)
    browser.find("#detail-close").click()
    if viewport == PHONE:
        assert browser.js("return document.getElementById('detail').getBoundingClientRect().height") == 0
    _clean(browser)
