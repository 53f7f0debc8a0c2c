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
        self.lists: dict[str, list[str]] = {}  # id of an <ol>/<ul> -> the text of each item
        self.text: list[str] = []
        self._list: str | None = None
        self._item: list[str] | None = None
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
        elif tag in ("ol", "ul") and a.get("id"):
            self._list = a["id"]
            self.lists[self._list] = []
        elif tag == "li" and self._list:
            self._item = []
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
        elif tag == "li" and self._item is not None and self._list:
            self.lists[self._list].append(" ".join("".join(self._item).split()))
            self._item = None
        elif tag in ("ol", "ul"):
            self._list = None

    def handle_data(self, data):
        self.text.append(data)
        if self._item is not None:
            self._item.append(data)
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
    wrong = [a for a in alts if a.startswith("test image ")]
    assert wrong and alts == ["training curves", "confusion matrix", *wrong, "first-layer filters", "Grad-CAM example",
                              "occlusion example"]
    for img in page.images:
        im = _decoded(img)
        assert np.asarray(im.convert("L")).std() > 10  # a picture, not a blank
    assert "the last stage (stage2) makes 1x1 maps" in text  # the Grad-CAM note is on the page
    assert "No evaluation is included" not in text and "On digits, test split (final weights)" in text
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
    assert page.lists["confident-wrong"] == ["#12: dog → cat (0.910)", "#4: cat → dog (0.660)"]  # no images given
    assert page.tables["hardest"][1:] == [["dog", "0.500", "0.750", "0.600", "6"], ["cat", "0.833", "0.714", "0.770",
                                                                                     "6"]]
    assert "Easiest: emu (1.000)" in text
    embedded = [img for img in page.images if img["alt"] == "confusion matrix"]
    assert len(embedded) == 1
    assert base64.b64decode(embedded[0]["src"].split(",", 1)[1]) == (tmp_path / "confusion.png").read_bytes()
    assert not [img for img in page.images if img["alt"] == "reliability diagram"]  # its file does not exist


def test_a_run_without_weights_or_result_still_gets_a_page_with_notes(run_dir, tmp_path):
    from cnnlab.eval.report import evaluate_run

    copy = shutil.copytree(run_dir, tmp_path / "unfinished")
    (copy / "model.safetensors").unlink()
    (copy / "result.json").unlink()
    (copy / "report.html").unlink()
    path = build_report(copy, evaluate=evaluate_run)
    page = Page(path.read_text())
    text = page.all_text
    assert "This run has not finished" in text and "no final weights" in text
    assert re.search(r"Evaluation [^.]*no final weights", text)  # the evaluation is a note, not a failed page
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


def _own_predictions(run_dir: Path):
    """The run's test split scored here with plain torch, not through cnnlab.eval: the saved final weights in
    the run's model, the images normalised by hand with the run's mean and std."""
    import torch

    run = Run.open(run_dir)
    test = run.dataset().test
    model = run.model("final")
    pre = run.preprocess
    mean = torch.tensor(pre.mean).view(1, -1, 1, 1)
    std = torch.tensor(pre.std).view(1, -1, 1, 1)
    with torch.no_grad():
        probs = torch.softmax(model((test.images.float() / 255 - mean) / std), 1)
    return run, test, probs


def test_the_pages_evaluation_is_the_test_splits_own(run_dir):
    """The page `cnnlab train` wrote: its scores, confusion matrix, hardest classes and most confidently wrong
    images match an evaluation computed here independently (plain torch predictions, scikit-learn metrics)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    run, test, probs = _own_predictions(run_dir)
    labels, conf, preds = test.labels.numpy(), probs.max(1).values.numpy(), probs.argmax(1).numpy()
    page = Page((run_dir / "report.html").read_text())
    text = page.all_text
    top5 = float((probs.topk(5, 1).indices == test.labels[:, None]).any(1).double().mean())
    assert f"top-1 accuracy {(preds == labels).mean():.4f}" in text and f"top-5 accuracy {top5:.4f}" in text
    assert f"images {len(labels)}" in text

    ids = list(range(run.num_classes))
    cm = confusion_matrix(labels, preds, labels=ids)
    table = page.tables["confusion"]
    assert table[0][1:] == run.classes and [row[0] for row in table[1:]] == run.classes
    assert [[int(v) for v in row[1:]] for row in table[1:]] == cm.tolist()
    wrong = np.flatnonzero(preds != labels)
    assert len(wrong) >= 3  # this small run makes mistakes, so the checks below mean something

    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
    hardest = page.tables["hardest"]
    assert hardest[0] == ["class", "recall", "precision", "F1", "images"]
    listed = [run.classes.index(row[0]) for row in hardest[1:]]
    assert recall[listed[0]] == recall.min()  # the first one listed is truly the lowest-recall class
    assert list(recall[listed]) == sorted(recall[listed])  # lowest first
    assert all(recall[c] >= recall[listed[-1]] for c in ids if c not in listed)  # no harder class left out
    for c, row in zip(listed, hardest[1:]):
        assert row[1:] == [f"{recall[c]:.3f}", f"{precision[c]:.3f}", f"{f1[c]:.3f}", str(support[c])], row

    thumbs = [img for img in page.images if img["alt"].startswith("test image ")]
    items = page.lists["confident-wrong"]
    assert len(thumbs) == len(items) == min(16, len(wrong))
    shown = []
    for img, item in zip(thumbs, items):
        m = re.fullmatch(r"test image (\d+): true (\S+), predicted (\S+) \((\d\.\d{3})\)", img["alt"])
        assert m, img["alt"]
        i = int(m[1])
        assert preds[i] != labels[i]  # truly misclassified
        assert (m[2], m[3]) == (run.classes[labels[i]], run.classes[preds[i]])
        assert float(m[4]) == pytest.approx(float(conf[i]), abs=5e-4)
        assert item == f"#{i}: {m[2]} → {m[3]} ({m[4]})"
        # the thumbnail is that test image, pixel for pixel (greyscale written as equal RGB channels)
        want = test.images[i].numpy().transpose(1, 2, 0).repeat(3, axis=2)
        np.testing.assert_array_equal(np.asarray(_decoded(img).convert("RGB")), want)
        shown.append(i)
    assert list(conf[shown]) == sorted(conf[shown], reverse=True)  # most confident first
    hidden = [j for j in wrong if j not in shown]
    assert all(conf[j] <= conf[shown].min() for j in hidden)  # no more confident mistake left out


def _snapshot(folder: Path) -> dict:
    """Every file's bytes and every folder under `folder`."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else "dir") for p in folder.rglob("*")}


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code)


def test_bad_report_inputs_leave_the_run_byte_for_byte_unchanged(run_dir, tmp_path, capsys):
    run = shutil.copytree(run_dir, tmp_path / "run")
    (run / "report.html").unlink()  # so that a page written by mistake would show
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    cases = [(["--image", "test:99999"], "test split holds 40 images"),
             (["--image", "val:40"], "val split holds 40 images"),
             (["--image", str(bad_png)], "undecodable image"),
             (["--image", str(tmp_path / "nothere.png")], "no such file"),
             (["--image", str(tmp_path / "adir")], "is a directory"),
             (["--weights", "ema"], "no ema weights"),
             (["--weights", "snapshot:3"], "snapshot"),
             (["--weights", "latest"], "--weights 'latest'"),
             (["--out", str(tmp_path / "adir")], "is a directory"),
             (["--out", str(tmp_path / "afile" / "r.html")], "is a file"),
             (["--out", "/proc/cnnlab-report.html"], "--out /proc/cnnlab-report.html: cannot write")]
    before = _snapshot(run)
    for extra, needle in cases:
        code = _exit_code(["report", str(run), *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and needle in err, (extra, err)
        assert _snapshot(run) == before, extra  # nothing written, nothing half-written, no eval/ folder
    assert main(["report", str(run)]) == 0  # a good call writes the page and nothing else
    after = _snapshot(run)
    assert set(after) - set(before) == {"report.html"} and all(after[k] == v for k, v in before.items())
