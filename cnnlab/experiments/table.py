"""An experiment's table as markdown: one row per cell, each measured column as mean ± std over the seeds,
the lectures' figures in their own columns beside the measured ones, then the findings and what differs."""

from __future__ import annotations

from .spec import Experiment, ExperimentResult, fmt_value


def _cell_text(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "\\|")


def rows_to_markdown(rows: list[dict]) -> str:
    """A list of dicts as a markdown table (columns in first-seen order)."""
    if not rows:
        return "(no rows)\n"
    cols = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_cell_text(row.get(c)) for c in cols) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def table_rows(spec: Experiment, result: ExperimentResult) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the experiment's table: label, every column (measured), and a 'lectures' column
    for each column the lectures give a figure for."""
    published = [c for c in spec.columns if any(c.key in cell.cell.published for cell in result.cells)]
    header = ["configuration"] + [c.header for c in spec.columns]
    header += [f"{spec.published_header or 'lectures'}: {c.header}" for c in published]
    rows = []
    for cell in result.cells:
        outcome = cell.outcome
        row = [cell.cell.label]
        for col in spec.columns:
            if outcome != "finished":
                row.append(outcome)
            else:
                row.append(fmt_value(cell.values.get(col.key), col.digits, col.spread))
        for col in published:
            value = cell.cell.published.get(col.key)
            row.append("—" if value is None else str(value))  # as the lectures print it: 12.0, 3.05
        rows.append(row)
    return header, rows


def render_table(spec: Experiment, result: ExperimentResult) -> str:
    """table.md: title, where the lectures give it, the options, the table, findings and the honest note."""
    header, rows = table_rows(spec, result)
    opts = result.options
    seeds = opts.get("seeds", 1)
    data = opts.get("data") or _data_of(result)
    runs = sum(len(c.runs) for c in result.cells)
    finished = sum(len(c.finished_runs) for c in result.cells)
    lines = [f"# {spec.title}", "", f"Lectures: {spec.lecture}", "",
             f"Measured on {data}{' (--quick)' if opts.get('quick') else ''}: {finished} of {runs} runs finished; "
             + ("one seed per cell" if seeds == 1 else f"mean ± standard deviation over {seeds} seeds")
             + (f"; options set for every run: {opts['set']}" if opts.get("set") else "")
             + f". Experiment {result.experiment_id}.", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|---|" + "|".join("---:" for _ in header[1:]) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if result.findings:
        lines += ["", "Findings:", ""] + [f"- {f}" for f in result.findings]
    if spec.note:
        lines += ["", f"What differs from the lectures: {spec.note}"]
    return "\n".join(lines) + "\n"


def _data_of(result: ExperimentResult) -> str:
    for cell in result.cells:
        for run in cell.finished_runs:
            return str((run.result or {}).get("data", "?"))
    return "?"
