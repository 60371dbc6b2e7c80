"""Merging stores: results from several machines (or copies of one) combined into one file
without duplicates -- networks matched by their resume key, measurements by their uid."""
from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from dnncost.study.store.rows import NetworkRow, from_row, insert_row
from dnncost.study.store.schema import MERGE_ORDER
from dnncost.study.store.store import Store, network_id_in, open_store


def merge(sources: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> dict[str, int]:
    """Combine the stores ``sources`` into ``out`` (created or extended) without duplicates.

    Sources are opened read-only and never modified. Networks are matched by their resume key
    (name, configuration hash, machine fingerprint); measurements by their uid, so merging a copy
    of a store, or merging twice, adds nothing. Returns how many rows of each table were added.
    """
    out_path = Path(out).expanduser()
    added: dict[str, int] = dict.fromkeys(MERGE_ORDER, 0)
    with open_store(out_path) as dst:
        dst.lock()
        for source in sources:
            src_path = Path(source).expanduser()
            if src_path.exists() and out_path.exists() and src_path.samefile(out_path):
                continue
            with open_store(src_path, read_only=True) as src:
                with dst.transaction(f"the merge of '{src_path}'") as c:
                    for table, n in _merge_one(src, c).items():
                        added[table] += n
    return added


def _merge_one(src: Store, c: sqlite3.Connection) -> dict[str, int]:
    """Copy every row of ``src`` into ``c``'s store by column name, network ids mapped to ours."""
    added: dict[str, int] = {}
    ids: dict[int, int] = {}
    for table in MERGE_ORDER:
        before = c.total_changes
        for row in src._rows(f"SELECT * FROM {table}"):  # noqa: S608 -- our own table names
            values = {name: row[name] for name in row.keys()}  # noqa: SIM118 -- sqlite3.Row
            if table == "networks":
                ids[values.pop("id")] = network_id_in(c, from_row(NetworkRow, row))
                continue
            if values.get("network_id") is not None:
                values["network_id"] = ids[values["network_id"]]
            insert_row(c, table, verb="INSERT OR IGNORE", **values)
        added[table] = c.total_changes - before
    return added



__all__ = ["merge"]
