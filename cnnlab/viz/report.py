"""The run report: one self-contained HTML page (every picture embedded as a base64 PNG, inline CSS, no
script fetched, nothing on the network) rendered from a Jinja2 template shipped with the package. It holds
the configuration, the layer table from the analysis, the training curves, the evaluation on the run's test
split (cnnlab.viz.report_eval: scores, hardest classes, confusion matrix, most confidently wrong images), the
first-layer filters and a Grad-CAM and an occlusion example.

The viz package does not import the evaluation package (they sit side by side): the caller passes
`evaluate=cnnlab.eval.evaluate_run` (called here, so that its failure becomes a note on the page), or an
`evaluation` it already has. The page is the only file written: no RUN/eval/ files (`cnnlab eval` writes those).

Each part is drawn on its own: a part that cannot be drawn for this run (no weights yet, a fully connected
net has no filters) becomes a note on the page instead of failing the page."""

from __future__ import annotations

import base64
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import CnnlabError, CnnlabWarning, ConfigError
from .config import IMAGE_SPEC

TEMPLATE = "report.html.j2"
REPORT_SCHEMA_VERSION = 1  # of the page's sections (what the template receives)
LAYER_TABLE_OPEN = 40  # layer tables up to this many rows start unfolded


@dataclass
class Picture:
    """A PNG embedded in the page: alt text, caption, the data URL, its pixel size, the command behind it."""

    alt: str
    caption: str
    src: str
    width: int
    height: int
    command: str = ""


@dataclass
class Section:
    """One part of the page: its content (a dict for the template), or the notes saying why it is absent."""

    id: str
    title: str
    content: dict | None = None
    notes: list[str] = field(default_factory=list)


def picture(png: bytes, alt: str, caption: str = "", command: str = "") -> Picture:
    """A PNG as a data URL with its width and height read from the PNG header."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        raise ConfigError(f"{alt}: not a PNG image")
    width, height = struct.unpack(">II", png[16:24])
    return Picture(alt, caption, "data:image/png;base64," + base64.b64encode(png).decode("ascii"), width, height,
                   command)


def figure_picture(fig, alt: str, caption: str = "", command: str = "") -> Picture:
    from .figures import png_bytes

    return picture(png_bytes(fig), alt, caption, command)


def _attempt(section: Section, build: Callable[[], dict | None]) -> Section:
    """Fill `section` from `build`; a user-level failure (CnnlabError) or a cnnlab note becomes a page note."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CnnlabWarning)
        try:
            section.content = build()
        except CnnlabError as exc:
            section.notes.append(str(exc))
    section.notes += [str(w.message) for w in caught if issubclass(w.category, CnnlabWarning)]
    return section


# --- the parts --------------------------------------------------------------------------------------------------

def overview(run) -> dict:
    """The headline numbers of result.json (or that the run has not finished)."""
    result = run.result or {}
    facts = []
    if result:
        count = result.get("test_count")
        acc = result.get("test_accuracy")
        if acc is not None:
            correct = f" ({round(acc * count)}/{count})" if count else ""
            facts.append(("test accuracy", f"{acc:.4f}{correct}"))
        if result.get("test_top5") is not None:
            facts.append(("test top-5", f"{result['test_top5']:.4f}"))
        if result.get("val_accuracy") is not None:
            facts.append(("validation accuracy", f"{result['val_accuracy']:.4f}"))
        for key, label, fmt in (("epochs", "epochs", "{}"), ("seconds", "training time", "{:.1f} s"),
                                ("params", "parameters", "{:,}"), ("device", "device", "{}")):
            if result.get(key) is not None:
                facts.append((label, fmt.format(result[key])))
    return {"finished": bool(result), "facts": facts}


def config_section(run) -> dict:
    """Every TrainConfig field as saved (config.yaml), and how images reach the model."""
    cfg = run.config.to_dict()
    rows = [(k, _value(v)) for k, v in cfg.items()]
    pre = run.preprocess
    prep = [("image size (after padding)", f"{pre.image_size[0]}×{pre.image_size[1]}"),
            ("channels", str(pre.channels)), ("resize", pre.resize), ("pad", str(pre.pad)),
            ("mean", ", ".join(f"{v:.4f}" for v in pre.mean)), ("std", ", ".join(f"{v:.4f}" for v in pre.std)),
            ("classes", f"{run.num_classes}: " + ", ".join(run.classes[:20]) + (" …" if run.num_classes > 20 else ""))]
    return {"rows": rows, "preprocess": prep}


def _value(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, dict):
        return ", ".join(f"{k}={x}" for k, x in v.items()) or "—"
    return str(v)


def layers_section(run) -> dict:
    """The analysis's per-layer table (cnnlab summary) of the run's architecture on its input size."""
    from ..analysis.render import human
    from ..analysis.summary import summarize
    from ..runs import resolve_model_spec

    model, name, size = resolve_model_spec(str(run.path))
    summary = summarize(model, size, name=name)
    rows = []
    for r in summary.layers:
        rf = r.receptive_field
        if rf.get("unknown"):
            field_text = "?"
        elif rf.get("global"):
            field_text = "global"
        else:
            s, j = rf["size"], rf["jump"]
            field_text = (f"{'≤' if rf.get('approx') else ''}{s[0]}" + (f"×{s[1]}" if s[0] != s[1] else "")
                          + f" (jump {j[0]})")
        window = "" if r.kernel is None else "×".join(map(str, r.kernel)) + f" /{r.stride[0]}" + (
            f" p{r.padding[0]}" if r.padding and any(r.padding) else "")
        rows.append({"name": r.name, "type": r.type, "window": window,
                     "shape": "×".join(map(str, r.output_shape[1:])) if r.output_shape else "(not run)",
                     "params": f"{r.params:,}", "flops": human(r.flops), "field": field_text})
    t = summary.totals
    return {"rows": rows, "open": len(rows) <= LAYER_TABLE_OPEN, "input": "×".join(map(str, size)),
            "totals": f"{t['params']:,} parameters, {human(t['flops'])} FLOPs per image, "
                      f"{human(t['activation_bytes'], 'B')} of activations", "notes": summary.flags}


def curves_section(run) -> dict:
    from .curves import draw_curves, run_curves

    fig = draw_curves([run_curves(run, run.path.name)])
    return {"pictures": [figure_picture(fig, "training curves", "Loss, accuracy and learning rate per epoch "
                                        "(training dashed, validation solid).", f"cnnlab viz curves {run.path}")]}


def filters_section(run, model) -> dict:
    from .filters import draw_filters, filter_grid

    fg = filter_grid(model)
    return {"pictures": [figure_picture(draw_filters(fg), "first-layer filters", fg.title + ".",
                                        f"cnnlab viz filters {run.path}")]}


def example_section(run, model, image_spec: str, dataset=None) -> dict:
    """Grad-CAM (predicted class, default layer) and occlusion (true class) of one image."""
    import torch

    from .attribution import grad_cam, grey_baseline, occlusion_map
    from .heatmaps import draw_grad_cam, draw_occlusion
    from .inputs import load_image
    from .layer_select import default_cam_layer

    image = load_image(run, image_spec, dataset)
    with torch.no_grad():
        pred = int(model(image.tensor).argmax(1))
    target = image.label if image.label is not None else pred
    pre = run.preprocess
    h, w = pre.image_size
    patch = max(2, min(h, w) // 4)
    stride = max(1, patch // 2)
    pictures = []
    occ = occlusion_map(model, image.tensor, target, grey_baseline(image.tensor, 0.5, pre.mean, pre.std), patch,
                        stride)
    pictures.append(figure_picture(draw_occlusion(image, occ, run.classes, pred), "occlusion example",
                                   f"Occlusion of {image.source}.",
                                   f"cnnlab viz occlusion {run.path} {image_spec} --patch {patch} --stride {stride}"))
    try:  # a fully connected net has no feature map: the occlusion example stays, Grad-CAM becomes a note
        layer, note = default_cam_layer(model, tuple(image.tensor.shape[1:]))
    except CnnlabError as exc:
        warnings.warn(f"no Grad-CAM: {exc}", CnnlabWarning)
        return {"pictures": pictures}
    if note:
        warnings.warn(note, CnnlabWarning)
    gc = grad_cam(model, image.tensor, layer.module, pred)
    pictures.insert(0, figure_picture(draw_grad_cam(image, gc, layer.name, run.classes, pred), "Grad-CAM example",
                                      f"Grad-CAM of {image.source} at {layer.name}.",
                                      f"cnnlab viz gradcam {run.path} {image_spec}"))
    return {"pictures": pictures}


# --- the page ---------------------------------------------------------------------------------------------------

def report_html(run, evaluation=None, *, evaluate: Callable | None = None, weights: str = "final",
                image: str = "test:0", dataset=None, model=None) -> str:
    """The page's HTML for an opened run (see the module docstring). `evaluate(run, weights=, dataset=)` →
    an EvalReport-shaped object (cnnlab.eval.evaluate_run) is called when no `evaluation` is given. `model`:
    the run's `weights` already loaded (else they are loaded here when a section needs them)."""
    import jinja2

    from .. import __version__
    from .report_eval import evaluation_section

    loaded: dict = {} if model is None else {"model": model}

    def data():  # the run's dataset, read once for the evaluation and the example (a failure: a note each)
        if "dataset" not in loaded:
            loaded["dataset"] = run.dataset() if dataset is None else dataset
        return loaded["dataset"]

    def run_model():
        if "model" not in loaded:
            loaded["model"] = run.model(weights)
        return loaded["model"]

    sections = [_attempt(Section("config", "Configuration"), lambda: config_section(run)),
                _attempt(Section("layers", "Layers"), lambda: layers_section(run)),
                _attempt(Section("curves", "Training curves"), lambda: curves_section(run))]
    ev = Section("evaluation", "Evaluation")
    if evaluation is not None:
        _attempt(ev, lambda: evaluation_section(evaluation))
    elif evaluate is not None:
        _attempt(ev, lambda: evaluation_section(evaluate(run, weights=weights, dataset=data())))
    else:
        ev.notes.append("No evaluation is included on this page (no evaluation was passed to the report "
                        "builder).")
    sections.append(ev)
    sections.append(_attempt(Section("filters", "First-layer filters"), lambda: filters_section(run, run_model())))
    sections.append(_attempt(Section("example", "Grad-CAM and occlusion"),
                             lambda: example_section(run, run_model(), image, data())))
    env = jinja2.Environment(loader=jinja2.PackageLoader("cnnlab.viz", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    cfg = run.config
    return env.get_template(TEMPLATE).render(
        title=f"cnnlab report · {cfg.model} on {cfg.data}", run_path=str(run.path), model=cfg.model, data=cfg.data,
        weights=weights, overview=overview(run), sections=sections, version=__version__,
        schema_version=REPORT_SCHEMA_VERSION)


def check_report_out(path: str | Path) -> Path:
    """--out FILE for the page, checked before any work: not a folder, inside a folder that exists (or can be
    made) and takes a new file. The last is tried with an unnamed temporary file (O_TMPFILE where the system
    has it), since permission bits alone do not tell (root, read-only mounts, /proc)."""
    import tempfile

    from ..utils.io import check_output_file

    path = check_output_file(path, "--out")
    if path.parent.is_dir():
        try:
            with tempfile.TemporaryFile(dir=path.parent):
                pass
        except OSError as exc:
            raise ConfigError(f"--out {path}: cannot write it ({exc.strerror or exc})") from None
    return path


def build_report(run, evaluation=None, *, evaluate: Callable | None = None, weights: str = "final",
                 image: str = "test:0", out: str | Path | None = None, dataset=None, model=None) -> Path:
    """Write the report of `run` (a Run or a run directory) to `out` (default RUN/report.html), atomically;
    returns the path. `evaluation` (an EvalReport-shaped object) or `evaluate` (cnnlab.eval.evaluate_run)
    fills the evaluation section; with neither, the page says that no evaluation is included."""
    from ..runs import Run, report_path
    from ..utils.io import write_text_atomic

    run = run if isinstance(run, Run) else Run.open(run)
    path = check_report_out(out if out else report_path(run.path))
    html = report_html(run, evaluation, evaluate=evaluate, weights=weights, image=image, dataset=dataset,
                       model=model)
    try:
        write_text_atomic(path, html)
    except OSError as exc:
        raise ConfigError(f"--out {path}: cannot write it ({exc.strerror or exc})") from None
    return path


def write_report(cfg, evaluation=None, *, evaluate: Callable | None = None) -> Path:
    """`cnnlab report RUN_DIR`: build_report with the command's options. Everything the user gave is checked
    first — the image spec and weights kind (cfg.validate), that the weights exist, that --out can be written,
    that the example image exists and decodes — so a bad input writes nothing; only then does any model run,
    and the page is the one file written (atomically, at the end)."""
    from ..runs import Run, report_path
    from .inputs import load_image

    cfg.validate()
    run = Run.open(cfg.run)
    try:
        run.resolve_weights(cfg.weights)
        exist = True
    except CnnlabError:
        if cfg.weights != "final":  # asked for by name: it must exist
            raise
        exist = False  # the final weights of a run still training may not be written yet: the page says so
    check_report_out(cfg.out if cfg.out else report_path(run.path))
    # Weights that exist must load: a damaged file is one line, not a note on the page; the page reuses them.
    model = run.model(cfg.weights) if exist else None
    dataset = None
    if IMAGE_SPEC.fullmatch(cfg.image) and not Path(cfg.image).is_file():
        try:
            dataset = run.dataset()
        except CnnlabError:  # the run's data cannot be read: the page says so in each section that needs it
            dataset = None
    if dataset is not None or Path(cfg.image).is_file():
        load_image(run, cfg.image, dataset)  # a wrong index or an undecodable file: one line, nothing written
    return build_report(run, evaluation, evaluate=evaluate, weights=cfg.weights, image=cfg.image, out=cfg.out,
                        dataset=dataset, model=model)
