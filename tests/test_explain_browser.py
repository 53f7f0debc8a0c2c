"""The explainer pages in a real headless Chromium (tests/browser.py): what a student clicks and types,
checked against PyTorch and the analysis; no network request, no console error, phone and desktop."""

import pytest
import torch
import torch.nn.functional as F
from browser import browser_fixture

from cnnlab.analysis.conv_demos import FILTER_BANK
from cnnlab.analysis.conv_explainer import conv_spec
from cnnlab.analysis.resolve import resolve_model
from cnnlab.analysis.summary import summarize
from cnnlab.explain.contribution import contribution_map
from cnnlab.explain.conv_page import conv_page
from cnnlab.explain.model_page import page_data
from cnnlab.explain.page import render_page

browser = browser_fixture()
PHONE, DESKTOP = (390, 844), (1280, 900)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """The two page types, written once for the module: the filter-bank page and ResNet-18's."""
    d = tmp_path_factory.mktemp("pages")
    (d / "conv.html").write_text(conv_page(conv_spec(demo=FILTER_BANK)))
    model, name, size = resolve_model("resnet18")
    summary = summarize(model, size, name=name)
    (d / "resnet18.html").write_text(render_page("model.html.j2", name, page_data(summary)))
    return {"conv": d / "conv.html", "resnet18": d / "resnet18.html", "summary": summary.to_dict()}


def _clean(browser):
    assert browser.console_errors() == []
    assert browser.network_requests() == []


def _fits_viewport(browser, *css):
    """No sideways scrolling of the page, and each element laid out inside the viewport's width."""
    width = browser.js("return window.innerWidth")
    assert browser.js("return document.documentElement.scrollWidth") <= width
    for sel in css:
        box = browser.js("const r = arguments[0].getBoundingClientRect(); return [r.left, r.right, r.width]",
                         browser.find(sel))
        assert box[2] > 0 and box[0] >= 0 and box[1] <= width + 1, (sel, box)


def _filter_bank_reference() -> torch.Tensor:
    x = torch.tensor([[[float(v) for v in r] for r in m] for m in FILTER_BANK.input])
    w = torch.tensor([[[[float(v) for v in r] for r in m] for m in k] for k in FILTER_BANK.kernels])
    b = torch.tensor([float(v) for v in FILTER_BANK.biases])
    return F.conv2d(x[None], w, b, stride=2, padding=1)[0]


def _value(text: str) -> float:
    return float(text.replace("−", "-"))


def test_filter_bank_output_1_1_is_what_pytorch_computes(browser, pages):
    from selenium.webdriver.common.keys import Keys

    ref = _filter_bank_reference()
    browser.open(pages["conv"], DESKTOP)
    # Go to output (1, 1) of map 0 with the page's own control.
    for field, value in (("#goto-i", "1"), ("#goto-j", "1")):
        browser.find(field).clear()
        browser.find(field).send_keys(value)
    browser.find("#goto-btn").click()
    assert browser.text("#unit-label") == "o0[1,1]"
    assert _value(browser.text("#unit-value")) == ref[0, 1, 1].item() == -5
    assert _value(browser.text("#out-0-1-1")) == ref[0, 1, 1].item()
    assert "(bias) = −5" in browser.text("#sum-line")
    # An asymmetric position of the other map, so rows and columns cannot be swapped unnoticed.
    from selenium.webdriver.support.ui import Select

    Select(browser.find("#goto-map")).select_by_value("1")
    for field, value in (("#goto-i", "2"), ("#goto-j", "0")):
        browser.find(field).clear()
        browser.find(field).send_keys(value)
    browser.find("#goto-btn").click()
    assert browser.text("#unit-label") == "o1[2,0]" and _value(browser.text("#unit-value")) == ref[1, 2, 0].item()
    # The same cell reached by stepping with the keyboard: 4 units before it, 3 channels + the sum each.
    browser.find("body").click()
    browser.keys(Keys.HOME)
    assert browser.text("#unit-label") == "o0[0,0]" and browser.text("#unit-value") == "…"
    browser.keys(*[Keys.ARROW_RIGHT] * 19)
    assert browser.text("#unit-label") == "o0[1,1]" and _value(browser.text("#unit-value")) == -5
    shown = [[_value(browser.text(f"#out-0-{i}-{j}")) for j in range(3)] for i in range(3)]
    assert shown[0] == ref[0, 0].tolist() and shown[1][:2] == ref[0, 1, :2].tolist()  # filled so far
    browser.keys(Keys.ARROW_LEFT)
    assert browser.text("#phase").startswith("Channel 2 of 3")
    # Space plays, space pauses.
    browser.keys(Keys.SPACE)
    assert browser.find("#play").get_attribute("aria-pressed") == "true"
    browser.keys(Keys.SPACE)
    assert browser.find("#play").get_attribute("aria-pressed") == "false"
    # The correction is shown with its reason, and the corrected kernel entry is marked.
    assert "w0[:,:,2] centre reads 1" in browser.text("#ex-corrections")
    browser.keys(Keys.HOME)
    browser.keys(*[Keys.ARROW_RIGHT] * 2)  # map 0, unit (0, 0), channel 2
    assert "corrected" in browser.find("#k-2-1-1").get_attribute("class")
    assert _value(browser.text("#k-2-1-1")) == -1
    _clean(browser)


def test_stride_3_on_the_7x7_example_does_not_fit(browser, pages):
    from selenium.webdriver.support.ui import Select

    browser.open(pages["conv"], DESKTOP)
    Select(browser.find("#example")).select_by_value("stride-7x7")
    assert "Fits: each output map is 5×5" in browser.text("#fit")
    stride = browser.find("#stride")
    stride.clear()
    stride.send_keys("3")
    fit = browser.text("#fit")
    assert "Does not fit! Cannot apply 3×3 filter on 7×7 image with stride 3" in fit and "2.33" in fit
    assert browser.text("#output-caption").startswith("1×2×2")  # PyTorch floors: 2x2
    padding = browser.find("#padding")
    padding.clear()
    padding.send_keys("1")
    assert "Fits: each output map is 3×3" in browser.text("#fit")  # (9 - 3)/3 + 1 = 3
    _clean(browser)


def test_resnet18_highlights_the_analysis_receptive_field(browser, pages):
    from selenium.webdriver.common.action_chains import ActionChains

    rows = {r["name"]: r for r in pages["summary"]["layers"]}
    browser.open(pages["resnet18"], DESKTOP)
    for name in ("layer2.0.conv2", "layer4.1.conv2"):
        node = browser.find(f'[data-name="{name}"]')
        browser.js("arguments[0].scrollIntoView({block: 'center'})", node)
        node.click()
        assert browser.text("#sel-name") == f"{name} (Conv2d)"
        units = browser.find("#units")
        ActionChains(browser.driver).move_to_element_with_offset(units, 1, 1).perform()  # just right of centre
        rf, (ho, wo) = rows[name]["receptive_field"], rows[name]["output_shape"][2:]
        rect = browser.find("#rf-rect")
        size = [float(rect.get_attribute("height")), float(rect.get_attribute("width"))]
        assert size == rf["size"]
        i, j = map(int, browser.text("#rf-info").split("(")[1].split(")")[0].split(", "))
        assert (i, j) in {(ho // 2, wo // 2), ((ho - 1) // 2, (wo - 1) // 2)}  # the unit under the pointer
        # The window is centred where the analysis's centre formula puts unit (i, j): c + i * jump.
        assert float(rect.get_attribute("y")) == rf["centre"][0] + i * rf["jump"][0] - (rf["size"][0] - 1) / 2
        assert float(rect.get_attribute("x")) == rf["centre"][1] + j * rf["jump"][1] - (rf["size"][1] - 1) / 2
    assert size == [435, 435]  # ResNet-18's published receptive field, at its last conv
    browser.keys("c")  # contributions: the heat map is drawn, the per-axis table is the layer's
    assert browser.find("#contrib").is_selected() and "units see a pixel" in browser.text("#legend")
    counts = contribution_map((224, 224), (ho, wo), rf)  # checked against autograd in test_explain_model
    heat = browser.find("#heat")
    box = browser.js("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]", heat)
    ActionChains(browser.driver).move_to_element_with_offset(heat, -box[0] / 2 + 1, -box[1] / 2 + 1).perform()
    info = browser.text("#pixel-info")  # a pixel near the top-left corner (the view is scaled down)
    p, q = map(int, info.split("(")[1].split(")")[0].split(", "))
    assert p < 8 and q < 8 and info.split(" = ")[1].startswith(f"{int(counts[p, q])} units"), info
    browser.keys("]")  # keyboard: the next layer in execution order
    assert browser.text("#sel-name") == "layer4.1.bn2 (BatchNorm2d)"
    _clean(browser)


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_pages_render_on_phone_and_desktop(browser, pages, viewport):
    browser.open(pages["conv"], viewport)
    _fits_viewport(browser, "#controls", "#stage", "#goto-btn", "#input-grids", "#output-grids")
    _clean(browser)
    browser.open(pages["resnet18"], viewport)
    _fits_viewport(browser, "#graph-box", "#details", "#units", "#input-view")
    _clean(browser)


def test_the_harness_sees_requests_and_console_errors(browser, tmp_path):
    """The two checks above can fail: a page that logs an error and asks for a remote image is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><head><link rel='icon' href='data:,'></head><body>"
                    "<img src='http://192.0.2.1/x.png' alt=''><script>console.error('boom');"
                    "document.body.dataset.ready = '1';</script></body></html>")
    browser.open(page, DESKTOP)
    assert any("boom" in m for m in browser.console_errors())
    assert browser.network_requests() == ["http://192.0.2.1/x.png"]
