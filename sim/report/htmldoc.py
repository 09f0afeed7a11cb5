"""Self-contained HTML pages for the commands' reports (``plan.html``, ``sizing.html``, ``compare.html``,
``sweep.html``): inline CSS, tables from pandas, plots embedded as base64 PNG data URIs, no external resource,
so one file can be mailed or served as it is."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table.t{border-collapse:collapse;font-size:13px}table.t td,table.t th{padding:3px 8px;border-bottom:1px solid #ddd;
text-align:right;white-space:nowrap}table.t td:first-child,table.t th:first-child{text-align:left}
table.t thead th{background:#f3f3f3;position:sticky;top:0}
pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}img{max-width:100%}.scroll{overflow-x:auto}
figure{margin:1em 0}figcaption{font-size:12px;color:#555}table.why td{text-align:left;white-space:normal}
table.lastwrap td:last-child,table.lastwrap th:last-child{text-align:left;white-space:normal;min-width:18em}
table.wrap td:nth-child(2),table.wrap td:nth-child(3){white-space:normal;text-align:left;min-width:9em}
.verdict{font-size:1.1em;background:#eef7ee;padding:.8em;border-left:4px solid #1b7f3b}
.verdict.bad{background:#fbeeee;border-left-color:#b00020}dl.asked{display:grid;grid-template-columns:max-content auto;
gap:.2em 1em;font-size:14px}dl.asked dt{font-weight:600}dl.asked dd{margin:0}.note{font-size:13px;color:#555}"""

esc = html.escape


def fig_png(fig: Any, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes (no timestamp metadata, so the bytes are reproducible)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,…`` for ``png``."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


def figures(images: Mapping[str, bytes | str]) -> str:
    """``<figure>`` per image (PNG bytes, or a data URI already made), captioned with its file name."""
    return "".join(
        f'<figure><img src="{v if isinstance(v, str) else data_uri(v)}" alt="{esc(name)}">'
        f"<figcaption>{esc(name)}</figcaption></figure>" for name, v in images.items())


def table(df: pd.DataFrame, formatters: Mapping[str, Callable[[Any], str]] | None = None,
          heads: Mapping[str, str] | None = None, classes: str = "t") -> str:
    """``df`` as an HTML table (no index; ``heads`` renames column headings; empty → "none")."""
    if df.empty:
        return "<p>none</p>"
    fmt = {k: v for k, v in (formatters or {}).items() if k in df.columns}
    out = df.to_html(index=False, border=0, classes=classes, na_rep="–", formatters=fmt,
                     float_format=lambda v: f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}")
    for k, v in (heads or {}).items():
        out = out.replace(f"<th>{esc(k)}</th>", f"<th>{esc(v)}</th>")
    return f'<div class="scroll">{out}</div>'


def asked(items: Mapping[str, str]) -> str:
    """What the user asked, as a definition list."""
    return '<dl class="asked">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items.items()) + "</dl>"


def page(title: str, verdict: str, body: str, good: bool = True) -> str:
    """A complete HTML document: ``title`` as heading, the one-line ``verdict`` right under it, then ``body``."""
    cls = "verdict" if good else "verdict bad"
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title><style>{CSS}</style>'
            f'</head><body><h1>{esc(title)}</h1><p class="{cls}">{verdict}</p>{body}</body></html>')
