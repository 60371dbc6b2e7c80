"""The count table as text: the module tree (or operators / module types) with share columns.

Kept beside the records so that ``print(report)`` and ``dnncost count`` show the same table without
the counting layer reaching up into reporting; the CLI's rich rendering reuses :func:`table_cells`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

COST_COLUMNS = ("macs", "macs_%", "flops", "flops_%", "bytes", "bytes_%")
HEADERS = {"module": "module", "type": "type", "params": "params", "output_shape": "output",
           "operator": "operator", "module_type": "module type", "phase": "phase", "calls": "calls",
           "macs": "MACs", "macs_%": "%", "flops": "FLOPs", "flops_%": "%", "bytes": "bytes",
           "bytes_%": "%"}


def human(value: object, *, unit: str = "") -> str:
    """1234567 -> '1.23 M' (SI prefixes), keeping small integers exact; '-' for None or NaN."""
    if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
        return "-" if value is None or isinstance(value, float) else str(value)
    if isinstance(value, int) and abs(value) < 10_000:
        return f"{value}{(' ' + unit) if unit else ''}"
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g}{(' ' + unit) if unit else ''}"


def _cell(key: str, value: object) -> str:
    if key.endswith("_%") and isinstance(value, float):
        return f"{value:.1f}"
    if key in ("macs", "flops", "bytes"):
        return human(value)
    if key == "params":
        return f"{value:,}" if value else ""
    return "" if value is None else str(value)


def table_columns(by: str) -> list[str]:
    """The columns of the table grouped ``by`` module, operator or module_type."""
    if by == "module":
        return ["module", "type", "params", "output_shape", *COST_COLUMNS]
    return ["phase", by, "calls", *COST_COLUMNS]


def table_cells(rows: Sequence[Mapping[str, object]], by: str) -> tuple[list[str], list[list[str]]]:
    """(headers, cells) of the table: numbers made human, module names indented by depth."""
    columns = table_columns(by)
    cells = []
    for row in rows:
        line = [_cell(c, row.get(c)) for c in columns]
        if by == "module":
            path = str(row["module"])
            indent = 0 if path.startswith("(") else path.count(".") + 1
            line[0] = "  " * indent + path.rsplit(".", 1)[-1] if indent else path
        cells.append(line)
    return [HEADERS[c] for c in columns], cells


def render_text_table(headers: Sequence[str], cells: Sequence[Sequence[str]], *,
                      title: str = "", footer: Sequence[str] = ()) -> str:
    """Fixed-width text: names left-aligned, numbers right-aligned, title and footer lines."""
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    left = [i < 2 or headers[i] in ("output", "phase", "operator", "module type", "type")
            for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if lft else v.rjust(w)
                         for v, w, lft in zip(values, widths, left, strict=True)).rstrip()

    out = [title] if title else []
    out += [line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)]
    if footer:
        out += ["", *footer]
    return "\n".join(out)


__all__ = ["human", "render_text_table", "table_cells", "table_columns"]
