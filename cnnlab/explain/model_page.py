"""The architecture explainer page: a model's traced data-flow graph, one block per layer with its output
shape, parameters, FLOPs and receptive field (all from the analysis's JSON, `cnnlab.summarize`), the
receptive field of any unit highlighted on the input, and each input pixel's contribution count."""

from __future__ import annotations

from dataclasses import dataclass

from ..analysis.render import human
from ..analysis.summary import Summary
from ..analysis.trace import INPUT_NODE
from .contribution import axis_counts
from .graph import layout
from .page import render_page


@dataclass
class ModelPageConfig:
    """`cnnlab explain MODEL`: which model (a registered name, notation or run directory), on what input."""

    model: str
    input_size: tuple[int, int, int] | None = None
    num_classes: int | None = None


def _is_spatial(row: dict) -> bool:
    rf, shape = row["receptive_field"], row["output_shape"] or []
    return row["ran"] and len(shape) == 4 and not rf["global"] and not rf["unknown"]


def _rf_text(rf: dict) -> str:
    if rf.get("unknown"):
        return "RF ?"
    if rf.get("global"):
        return "RF global"
    size = rf["size"]
    return f"RF {'≤' if rf.get('approx') else ''}{size[0] if size[0] == size[1] else 'x'.join(map(str, size))}"


def _shape_text(shape: list[int] | None) -> str:
    return "×".join(map(str, shape[1:])) if shape else "(not run)"


def contribution_counts(doc: dict) -> tuple[dict[str, int], list[dict]]:
    """Per spatial layer, the per-axis pixel counts (see contribution.py), shared between layers with the
    same field and output size: ({row index: table index}, tables)."""
    _, h, w = doc["input_size"]
    index: dict[tuple, int] = {}
    tables: list[dict] = []
    of_row: dict[str, int] = {}
    for i, row in enumerate(doc["layers"]):
        if not _is_spatial(row):
            continue
        rf, (ho, wo) = row["receptive_field"], row["output_shape"][2:]
        key = (ho, wo, *rf["size"], *rf["jump"], *rf["centre"])
        if key not in index:
            rows = axis_counts(h, ho, rf["size"][0], rf["jump"][0], rf["centre"][0])
            cols = axis_counts(w, wo, rf["size"][1], rf["jump"][1], rf["centre"][1])
            index[key] = len(tables)
            tables.append({"rows": rows.tolist(), "cols": cols.tolist(),
                           "max": int(rows.max()) * int(cols.max()), "min": int(rows.min()) * int(cols.min())})
        of_row[str(i)] = index[key]
    return of_row, tables


def page_data(summary: Summary) -> dict:
    """Everything the page shows, computed here: the analysis document, the laid-out graph with each
    block's labels, and the contribution count tables."""
    doc = summary.to_dict()
    rows = doc["layers"]
    ran = [f"row:{i}" for i, r in enumerate(rows) if r["ran"]]
    joins = [f"join:{k}" for k in range(len(summary.joins))]
    placed, levels, columns = layout([INPUT_NODE, *ran, *joins], summary.edges)
    c, h, w = doc["input_size"]
    nodes = []
    for node in placed:
        kind, _, num = node.id.partition(":")
        if node.id == INPUT_NODE:
            label = {"name": "input", "line2": f"image {c}×{h}×{w}", "line3": "RF 1"}
        elif kind == "join":
            j = summary.joins[int(num)]
            label = {"name": j["name"], "line2": f"{j['op']} · {_shape_text(j['output_shape'])}",
                     "line3": "merge: no parameters, no FLOPs"}
        else:
            r = rows[int(num)]
            flops = "? FLOPs" if r["flops"] is None else f"{human(r['flops'])} FLOPs"
            label = {"name": r["name"], "line2": f"{r['type']} · {_shape_text(r['output_shape'])}",
                     "line3": f"{human(r['params'])} params · {flops} · {_rf_text(r['receptive_field'])}",
                     "row": int(num), "spatial": _is_spatial(r)}
        nodes.append({"id": node.id, "level": node.level, "column": node.column, **label})
    of_row, tables = contribution_counts(doc)
    return {"kind": "model", "analysis": doc, "nodes": nodes, "edges": [list(e) for e in summary.edges],
            "levels": levels, "columns": columns, "counts_of_row": of_row, "counts": tables,
            "unrun": [r["name"] for r in rows if not r["ran"]]}


def model_page(config: ModelPageConfig) -> str:
    """The page's HTML for a registered model, a notation string or a saved run's architecture."""
    from ..runs import resolve_model_spec as resolve_model
    from ..analysis.summary import summarize

    model, name, size = resolve_model(config.model, config.input_size, config.num_classes)
    summary = summarize(model, size, name=name)
    return render_page("model.html.j2", f"cnnlab · {name}", page_data(summary))
