"""The study's report: Markdown, one self-contained HTML file, CSV and JSON, from the study's findings.

:func:`write_report` renders the records :func:`dnncost.study.findings.study_findings` computed
from a results store: the report is built once as a list of blocks
(:mod:`dnncost.reporting.sections`) and rendered twice (:mod:`dnncost.reporting.blocks`), to
Markdown (figures as PNG files beside it) and to HTML; the tables behind it are written as CSV and
JSON.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from dnncost.core.errors import OutputError
from dnncost.reporting.blocks import Block, FigureBlock, render_html, render_markdown
from dnncost.reporting.formatting import render_csv, render_json
from dnncost.reporting.sections import report_blocks
from dnncost.study.findings import Findings, GroupFindings


@dataclass(frozen=True)
class ReportFiles:
    """Where the report was written."""

    folder: Path
    markdown: Path
    html: Path
    networks_csv: Path
    fits_csv: Path
    json: Path
    figures: tuple[Path, ...]
    verdicts: tuple[str, ...]  # each group's verdict headline
    data_parallel_csv: Path | None = None  # only when the store holds data-parallel results
    time_to_accuracy_csv: Path | None = None  # only when a network was trained to a target


def check_output_folder(out: str | Path) -> Path:
    """The report folder ``out``; OutputError when it is a file, or cannot be created or written
    (checked before a long study, so that its report is not lost at the end)."""
    folder = Path(out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"report folder '{folder}' is an existing file; give a folder path "
                          "(it is created if missing)")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot create report folder '{folder}': '{existing}' is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write the report into '{folder}': '{existing}' is not writable")
    return folder


def check_output_file(out: str | Path) -> Path:
    """The file ``out`` a result (a figure) will be written to; OutputError when it is a folder,
    its folder is missing, or it cannot be written (tried: a new file is created and removed, an
    existing one opened for appending, which changes nothing) -- checked before long work, so that
    nothing measured is lost at the end. Nothing is left behind."""
    path = Path(out).expanduser()
    if path.is_dir():
        raise OutputError(f"cannot write '{path}': it is a folder; give a file name such as "
                          f"{path / 'whatif.png'}")
    if not path.parent.is_dir():
        raise OutputError(f"cannot write '{path}': folder '{path.parent}' does not exist")
    existed = path.exists()
    try:
        with path.open("ab"):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write '{path}': {exc.strerror or exc}") from None
    if not existed:
        path.unlink()
    return path


def write_report(findings: Findings, out: str | Path) -> ReportFiles:
    """Render ``findings`` (dnncost.study.findings.study_findings of a store) as report.md
    (+ figures/), report.html, networks.csv, fits.csv, results.json, when the store holds
    data-parallel results data_parallel.csv, and when it holds runs to a target accuracy
    time_to_accuracy.csv in ``out``; OutputError when the folder cannot be written."""
    folder = check_output_folder(out)
    blocks = report_blocks(findings)
    try:
        return _write(folder, blocks, findings.groups)
    except OSError as exc:
        raise OutputError(f"cannot write the report into '{folder}': {exc.strerror or exc} "
                          f"({exc.filename})") from exc


def _write(folder: Path, blocks: Sequence[Block], groups: Sequence[GroupFindings]) -> ReportFiles:
    figure_dir = folder / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for b in blocks:
        if isinstance(b, FigureBlock):
            path = figure_dir / b.filename
            path.write_bytes(b.png)
            figures.append(path)
    files = ReportFiles(folder=folder, markdown=folder / "report.md", html=folder / "report.html",
                        networks_csv=folder / "networks.csv", fits_csv=folder / "fits.csv",
                        json=folder / "results.json", figures=tuple(figures),
                        verdicts=tuple(g.analysis.verdict.headline for g in groups))
    files.markdown.write_text(render_markdown(blocks), encoding="utf-8")
    files.html.write_text(render_html(blocks), encoding="utf-8")
    network_rows, fit_rows, payload, dp_rows, tta_rows = [], [], [], [], []
    for found in groups:
        group, analysis = found.group, found.analysis
        key = {"config_hash": group.config_hash, "fingerprint": group.fingerprint}
        network_rows += [{**key, **r} for r in analysis.network_rows()]
        if analysis.data_parallel is not None:
            dp_rows += [{**key, **r.to_row()} for r in analysis.data_parallel.rows]
        if analysis.time_to_accuracy is not None:
            tta_rows += [{**key, **r.to_row()} for r in analysis.time_to_accuracy.rows]
        fit_rows += [{**key, **r} for r in analysis.fit_rows()]
        payload.append({**key, "config": dict(group.config), "environment": dict(group.environment),
                        "calibration": group.calibration, **analysis.to_dict(),
                        "machine_drift": found.drift.to_dict(),
                        "stage_seconds": dict(found.stage_seconds)})
    files.networks_csv.write_text(render_csv(network_rows) + "\n", encoding="utf-8")
    files.fits_csv.write_text(render_csv(fit_rows) + "\n", encoding="utf-8")
    files.json.write_text(render_json(payload) + "\n", encoding="utf-8")
    if dp_rows:
        dp_csv = folder / "data_parallel.csv"
        dp_csv.write_text(render_csv(dp_rows) + "\n", encoding="utf-8")
        files = replace(files, data_parallel_csv=dp_csv)
    if tta_rows:
        tta_csv = folder / "time_to_accuracy.csv"
        tta_csv.write_text(render_csv(tta_rows) + "\n", encoding="utf-8")
        files = replace(files, time_to_accuracy_csv=tta_csv)
    return files


__all__ = ["ReportFiles", "check_output_file", "check_output_folder", "write_report"]
