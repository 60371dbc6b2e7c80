"""``dnncost report``: analyse a results database and write Markdown, HTML, CSV and JSON."""
from __future__ import annotations

import argparse

from dnncost.commands._exit_codes import EXIT_OK
from dnncost.study.defaults import DEFAULT_DB, DEFAULT_OUT


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="write the study's report from a results database",
        description="Analyse the results in --db (per configuration and machine) and write "
                    "report.md (+ figures/), a self-contained report.html, networks.csv, fits.csv "
                    "and results.json into --out.")
    parser.add_argument("--db", default=DEFAULT_DB, metavar="PATH",
                        help=f"results database (default: {DEFAULT_DB})")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"report folder (default: {DEFAULT_OUT})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dnncost.reporting.report import write_report
    from dnncost.study.findings import study_findings
    from dnncost.study.store import open_store

    with open_store(args.db, read_only=True) as store:  # reading never changes the file
        findings = study_findings(store)
    files = write_report(findings, args.out)
    for headline in files.verdicts:
        print(headline)
    print(f"report: {files.html}  (also {files.markdown.name}, {files.networks_csv.name}, "
          f"{files.fits_csv.name}, {files.json.name} in {files.folder})")
    return EXIT_OK
