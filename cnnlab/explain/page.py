"""Render an explainer page from its Jinja2 template (package data) and write it atomically."""

from __future__ import annotations

import json
from pathlib import Path

from .. import __version__
from ..errors import ConfigError
from ..utils.io import write_text_atomic

PAGE_SCHEMA_VERSION = 1  # of the JSON embedded in every page (<script id="page-data">)


def embed_json(obj) -> str:
    """JSON safe to place inside <script type="application/json">: '<', '>' and '&' are escaped, so text a
    user typed (a notation such as "conv3-8 > relu") can never close the script element."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(template: str, title: str, data: dict) -> str:
    """The HTML of one page: `template` (a file in cnnlab/explain/templates) with `data` embedded."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("cnnlab.explain", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    payload = {"schema_version": PAGE_SCHEMA_VERSION, **data}
    return env.get_template(template).render(title=title, data_json=embed_json(payload), version=__version__)


def write_page(path: str | Path, html: str) -> Path:
    """Write `html` to `path` atomically (a reader never sees half a page); a one-line error otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--html {path}: is a directory; give a file name such as {path / 'page.html'}")
    try:
        write_text_atomic(path, html)
    except OSError as exc:
        raise ConfigError(f"--html {path}: cannot write it ({exc.strerror or exc})") from None
    return path
