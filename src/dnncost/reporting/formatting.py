"""Render rows of plain records as a text table, JSON or CSV. Only the CLI and reports call this."""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence

from dnncost.counting.table import human


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return "" if value is None else str(value)


def render_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None,
                 *, title: str | None = None, footer: str | None = None) -> str:
    """A fixed-width text table; numbers right-aligned."""
    columns = list(columns or (rows[0].keys() if rows else []))
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row.get(c), (int, float)) or row.get(c) is None for row in rows)
               for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    out = [title] if title else []
    out += [line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells]
    if footer:
        out += ["", footer]
    return "\n".join(out)


def render_json(payload: object) -> str:
    """Indented JSON; NaN becomes null so the output is valid JSON."""
    def clean(obj: object) -> object:
        if isinstance(obj, float) and not math.isfinite(obj):
            return None
        if isinstance(obj, Mapping):
            return {str(k): clean(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [clean(v) for v in obj]
        return obj
    return json.dumps(clean(payload), indent=2)


def render_csv(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> str:
    """CSV with a header row."""
    columns = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().rstrip("\n")


def render(rows: Sequence[Mapping[str, object]], fmt: str, *, columns: Sequence[str] | None = None,
           title: str | None = None, footer: str | None = None, json_payload: object = None) -> str:
    """Dispatch on ``fmt`` ('table', 'json', 'csv'); JSON uses ``json_payload`` when given."""
    if fmt == "json":
        return render_json(json_payload if json_payload is not None else list(rows))
    if fmt == "csv":
        return render_csv(rows, columns)
    return render_table(rows, columns, title=title, footer=footer)


__all__ = ["human", "render", "render_csv", "render_json", "render_table"]
