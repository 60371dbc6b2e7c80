"""The report's blocks -- headings, paragraphs, tables, figures, code -- and their two renderings:
Markdown (figures as PNG files beside it) and one self-contained HTML page (figures embedded as
base64 PNG, every piece of text escaped with :func:`html.escape`, no scripts, no external
resources), so the two always say the same thing; and the number formats the tables use.
"""
from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from dnncost.reporting.formatting import human

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
figure{margin:1.5em 0}figcaption{font-size:13px;color:#555}img{max-width:100%}
.verdict{border-left:4px solid #444;padding:.3em 1em;background:#fafafa}
pre{white-space:pre-wrap;font-size:12px;background:#f6f6f6;padding:.6em}
"""  # source: our choice, a plain readable page



# -- blocks -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str
    emphasis: bool = False


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class FigureBlock:
    filename: str
    png: bytes
    caption: str


@dataclass(frozen=True)
class Code:
    text: str


Block = Heading | Paragraph | Table | FigureBlock | Code


# -- formatting numbers --------------------------------------------------------------------------------
def num_text(value: object, digits: int = 3) -> str:
    """3 significant digits, without an exponent for the magnitudes a report shows (1,234 not
    1.23e+03); '-' for missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if not isinstance(value, float):
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"


def ci_text(low: float, high: float, digits: int = 2) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "-"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def pct_text(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def bytes_text(value: int) -> str:
    """Bytes with a unit: '648 B', '1.08 MB'."""
    text = human(value)
    return f"{text}B" if text[-1].isalpha() else f"{text} B"



# -- rendering -----------------------------------------------------------------------------------------
def _md_text(text: str) -> str:
    """Text safe in Markdown: markup characters as HTML entities (renderers pass raw HTML on)."""
    return html.escape(text, quote=False)


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block], *, figure_dir: str = "figures") -> str:
    """Markdown with figures referenced as PNG files under ``figure_dir``; text escaped."""
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {_md_text(b.text)}")
        elif isinstance(b, Paragraph):
            out.append(f"**{_md_text(b.text)}**" if b.emphasis else _md_text(b.text))
        elif isinstance(b, Code):
            out.append(f"```\n{b.text}\n```")
        elif isinstance(b, Table):
            out.append("\n".join(
                ["| " + " | ".join(_md_cell(c) for c in b.columns) + " |",
                 "|" + "|".join("---" for _ in b.columns) + "|"]
                + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]))
        elif isinstance(b, FigureBlock):
            caption = _md_text(b.caption)
            out.append(f"![{caption}]({figure_dir}/{b.filename})\n\n*{caption}*")
    return "\n\n".join(out) + "\n"


def render_html(blocks: Sequence[Block], *, title: str = "dnncost study") -> str:
    """One self-contained page: images inline as base64 PNG, every text escaped, no scripts."""
    e = html.escape
    body = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            body.append(f'<p class="verdict"><strong>{e(b.text)}</strong></p>' if b.emphasis
                        else f"<p>{e(b.text)}</p>")
        elif isinstance(b, Code):
            body.append(f"<pre>{e(b.text)}</pre>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{e(c)}</th>" for c in b.columns)
            rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, FigureBlock):
            data = base64.b64encode(b.png).decode("ascii")
            body.append(f'<figure><img alt="{e(b.caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{e(b.caption)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><link rel=\"icon\" href=\"data:,\">"
            f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


__all__ = ["CSS", "Block", "Code", "FigureBlock", "Heading", "Paragraph", "Table", "bytes_text", "ci_text",
           "num_text", "pct_text", "render_html", "render_markdown"]
