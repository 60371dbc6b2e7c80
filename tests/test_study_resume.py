"""Kill a real ``dnncost study --quick`` with SIGKILL midway, rerun the same command, and find every
result finished before the kill present exactly once, every planned repeat once, re-measures of
drifted repeats within their budget over both runs, and the study complete."""
from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time

from dnncost.measuring.interleave import REMEASURE_SHARE
from dnncost.study.config import quick_config

QUICK = quick_config()


def _snapshot(db) -> dict[str, set]:
    """Every stored result, by its identity: measurement uids, and (network, mode) of counts."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {
            "counts": set(conn.execute("SELECT network_id, mode FROM counts").fetchall()),
            "timings": {r[0] for r in conn.execute("SELECT uid FROM step_timings")},
            "epochs": {r[0] for r in conn.execute("SELECT uid FROM epochs")},
        }
    finally:
        conn.close()


def _results(db) -> int:
    try:
        return sum(len(v) for v in _snapshot(db).values())
    except sqlite3.Error:  # not created yet, or the schema is being written
        return 0


def test_sigkill_midway_then_rerun_resumes(tmp_path):
    db, out = tmp_path / "study.sqlite", tmp_path / "report"
    cmd = [sys.executable, "-m", "dnncost.cli", "study", "--quick", "--no-progress",
           "--db", str(db), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while _results(db) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the study finished before it could be killed midway"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    before = _snapshot(db)
    assert sum(len(v) for v in before.values()) >= 3

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "already stored (resumed)" in rerun.stdout and (out / "report.html").is_file()
    after = _snapshot(db)
    for kind, keys in before.items():
        assert keys <= after[kind], f"{kind} finished before the kill went missing"

    conn = sqlite3.connect(db)
    networks = conn.execute("SELECT id FROM networks").fetchall()
    assert len(networks) == len(QUICK.models)
    budget = math.ceil(REMEASURE_SHARE * QUICK.repeats)
    for (nid,) in networks:  # every result exactly once: no planned repeat measured twice
        for mode in ("train", "eval"):
            counts = dict(conn.execute(
                "SELECT remeasure, COUNT(*) FROM step_timings WHERE network_id = ? AND mode = ? "
                "GROUP BY remeasure", (nid, mode)).fetchall())
            assert counts.get(0) == QUICK.repeats
            assert counts.get(1, 0) <= budget  # re-measures of drifted repeats, over both runs
        assert conn.execute("SELECT COUNT(*) FROM counts WHERE network_id = ?", (nid,)).fetchone()[0] == 2
        (complete,) = conn.execute("SELECT COUNT(*) FROM trainings WHERE network_id = ? AND "
                                   "status = 'complete'", (nid,)).fetchone()
        assert complete == 1
    statuses = [s for (s,) in conn.execute("SELECT status FROM runs ORDER BY started, rowid")]
    assert statuses == ["interrupted", "complete"]
    (errors,) = conn.execute("SELECT COUNT(*) FROM errors").fetchone()
    assert errors == 0
    conn.close()
