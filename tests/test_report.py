"""The run report page: written by `cnnlab train` (unless --no-report) and `cnnlab report`, self-contained,
holding the configuration, the analysis's layer table, the curves, the evaluation when given, the filters and a
Grad-CAM and an occlusion example; a part that cannot be drawn is a note, not a failure."""

from __future__ import annotations

import base64
import io
import re
import shutil
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.runs import Run
from cnnlab.viz.report import build_report, report_html


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    assert main(["train", "--epochs", "2", "--threads", "1", "--quiet", "--limit-per-class", "20",
                 "--out", str(out)]) == 0
    return out


class Page(HTMLParser):
    """The parts of a page the tests read: images, table rows (cell texts), section ids, all text."""

    def __init__(self, html: str):
        super().__init__()
        self.images: list[dict] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.sections: list[str] = []
        self.text: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        elif tag == "section":
            self.sections.append(a.get("id", ""))
        elif tag == "table":
            self._table = a.get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def _decoded(img: dict) -> Image.Image:
    src = img["src"]
    assert src.startswith("data:image/png;base64,"), src[:40]
    im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    im.load()  # decode every pixel (a truncated PNG fails here, not only at its header)
    assert im.size == (int(img["width"]), int(img["height"]))
    return im


def test_train_writes_the_report_and_no_report_skips_it(run_dir, tmp_path, capsys):
    assert (run_dir / "report.html").is_file()
    assert not list(run_dir.glob(".report.html.*"))  # written atomically: no temporary left
    out = tmp_path / "quiet"
    assert main(["train", "--epochs", "1", "--threads", "1", "--quiet", "--limit-per-class", "5", "--no-report",
                 "--out", str(out)]) == 0
    assert "report:" not in capsys.readouterr().out
    assert (out / "result.json").is_file() and not (out / "report.html").exists()


def test_the_page_holds_configuration_layers_curves_filters_and_examples(run_dir):
    html = (run_dir / "report.html").read_text()
    page = Page(html)
    assert page.sections == ["config", "layers", "curves", "evaluation", "filters", "example"]
    text = page.all_text
    for needle in ("lenet5 on digits", "limit_per_class 20", "epochs 2", "optimizer sgd", "label_smoothing 0.1",
                   "image size (after padding) 32×32", "parameters 61,706"):
        assert needle in text, needle
    layers = page.tables["layer-table"]
    by_name = {row[0]: row for row in layers[1:]}
    # LeNet-5 as the lectures count it: C1 156, C3 2,416, C5 48,120, F6 10,164, output 850 parameters;
    # receptive fields 5, 6, 14, 16, 32 through C1, S2, C3, S4, C5.
    assert [by_name[n][4] for n in ("features.0", "features.3", "features.6", "classifier.1", "classifier.3")] == \
        ["156", "2,416", "48,120", "10,164", "850"]
    assert [by_name[n][6].split()[0] for n in ("features.0", "features.2", "features.3", "features.5",
                                               "features.6")] == ["5", "6", "14", "16", "32"]
    assert by_name["features.6"][3] == "120×1×1"
    alts = [img["alt"] for img in page.images]
    assert alts == ["training curves", "first-layer filters", "Grad-CAM example", "occlusion example"]
    for img in page.images:
        im = _decoded(img)
        assert np.asarray(im.convert("L")).std() > 10  # a picture, not a blank
    assert "the last stage (stage2) makes 1x1 maps" in text  # the Grad-CAM note is on the page
    assert "No evaluation is included" in text
    # Nothing can reach the network: no URL other than inline data and in-page anchors.
    assert not re.findall(r'(?:src|href)\s*=\s*"(?!data:|#)', html)
    assert "http://" not in html and "https://" not in html and "@import" not in html


@dataclass
class EvalReport:
    """What cnnlab.eval.report.evaluate_run returns (issue 11), built here by hand."""

    top1: float
    top5: float | None
    loss: float
    count: int
    classes: list
    per_class: list
    easiest: list
    hardest: list
    confusion: np.ndarray
    confident_wrong: list
    ece: float
    members: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    files: dict = field(default_factory=dict)


def _evaluation(tmp_path: Path) -> EvalReport:
    confusion = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 7]])
    png = tmp_path / "confusion.png"
    Image.fromarray(np.repeat(np.linspace(0, 255, 30, dtype=np.uint8)[None, :, None], 20, 0).repeat(3, 2)).save(png)
    per_class = [{"class": c, "accuracy": a, "precision": p, "recall": a, "f1": f, "support": s}
                 for c, a, p, f, s in (("cat", 5 / 6, 5 / 7, 0.77, 6), ("dog", 0.5, 0.75, 0.6, 6),
                                       ("emu", 1.0, 7 / 8, 0.93, 7))]
    return EvalReport(top1=15 / 19, top5=None, loss=0.4321, count=19, classes=["cat", "dog", "emu"],
                      per_class=per_class, easiest=[per_class[2]], hardest=[per_class[1], per_class[0]],
                      confusion=confusion, confident_wrong=[{"index": 12, "true": "dog", "pred": "cat", "prob": 0.91},
                                                            {"index": 4, "true": "cat", "pred": "dog", "prob": 0.66}],
                      ece=0.0567, notes=["3 classes"], files={"confusion_png": png,
                                                             "reliability_png": tmp_path / "missing.png"})


def test_the_evaluation_section_shows_an_eval_report(run_dir, tmp_path):
    ev = _evaluation(tmp_path)
    page = Page(report_html(Run.open(run_dir), ev))
    text = page.all_text
    assert "No evaluation is included" not in text
    for needle in ("top-1 accuracy 0.7895", "cross-entropy loss 0.4321", "images 19",
                   "expected calibration error 0.0567", "top-5 accuracy —", "3 classes"):
        assert needle in text, needle
    confusion = page.tables["confusion"]
    assert confusion[0] == ["true \\ pred", "cat", "dog", "emu"]
    assert [row[1:] for row in confusion[1:]] == [["5", "1", "0"], ["2", "3", "1"], ["0", "0", "7"]]
    assert [row[0] for row in confusion[1:]] == ["cat", "dog", "emu"]
    assert page.tables["per-class"][2] == ["dog", "0.500", "0.750", "0.500", "0.600", "6"]
    assert page.tables["confident-wrong"][1:] == [["12", "dog", "cat", "0.910"], ["4", "cat", "dog", "0.660"]]
    assert "Hardest classes dog (accuracy 0.500, recall 0.500, f1 0.600) cat (accuracy 0.833" in text
    embedded = [img for img in page.images if img["alt"] == "confusion matrix"]
    assert len(embedded) == 1
    assert base64.b64decode(embedded[0]["src"].split(",", 1)[1]) == (tmp_path / "confusion.png").read_bytes()
    assert not [img for img in page.images if img["alt"] == "reliability diagram"]  # its file does not exist


def test_a_run_without_weights_or_result_still_gets_a_page_with_notes(run_dir, tmp_path):
    copy = shutil.copytree(run_dir, tmp_path / "unfinished")
    (copy / "model.safetensors").unlink()
    (copy / "result.json").unlink()
    (copy / "report.html").unlink()
    path = build_report(copy)
    page = Page(path.read_text())
    text = page.all_text
    assert "This run has not finished" in text and "no final weights" in text
    assert page.tables["layer-table"] and [img["alt"] for img in page.images] == ["training curves"]


def test_cnnlab_report_writes_where_asked(run_dir, tmp_path, capsys):
    out = tmp_path / "pages" / "r.html"
    assert main(["report", str(run_dir), "--out", str(out), "--image", "test:7"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    page = Page(out.read_text())
    assert "test image 7 of digits" in page.all_text
    assert main(["report", str(run_dir), "--weights", "ema"]) == 2
    assert "no ema weights" in capsys.readouterr().err


def test_a_fully_connected_run_gets_notes_for_filters_and_grad_cam_but_keeps_occlusion(tmp_path):
    from cnnlab.train import train

    train(model="fc32 > relu > fc10", epochs=1, threads=1, quiet=True, limit_per_class=5, out=str(tmp_path / "fc"))
    page = Page(build_report(tmp_path / "fc").read_text())
    text = page.all_text
    assert "has no convolution layer" in text and "no Grad-CAM" in text
    assert [img["alt"] for img in page.images] == ["training curves", "occlusion example"]
