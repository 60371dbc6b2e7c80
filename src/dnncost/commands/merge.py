"""``dnncost merge A.sqlite B.sqlite -o C.sqlite``: combine study results from several machines."""
from __future__ import annotations

import argparse

from dnncost.commands._exit_codes import EXIT_OK


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge", help="combine results databases (e.g. from several machines) without duplicates",
        description="Copy every result of the SOURCE databases into OUT (created, or extended if it "
                    "exists). Networks are matched by name, configuration and machine; each "
                    "measurement is copied once however often it is merged.")
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="results databases to merge")
    parser.add_argument("-o", "--out", required=True, metavar="OUT", help="the merged database")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dnncost.study.store import merge

    added = merge(args.sources, args.out)
    summary = ", ".join(f"{n} {table}" for table, n in added.items() if n)
    print(f"merged {len(args.sources)} database(s) into {args.out}: added {summary or 'nothing new'}")
    return EXIT_OK
