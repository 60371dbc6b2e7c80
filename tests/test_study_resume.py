"""Kill a real ``dnncost study --quick`` with SIGKILL midway, rerun the same command, and find every
result finished before the kill present exactly once, every planned repeat once, re-measures of
drifted repeats within their budget over both runs, and the study complete. The kill lands wherever
the first run is (the step timings, or the training to the target accuracy), and once for certain
inside the time-to-accuracy stage: right after a network's first validation is stored."""
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
            "validations": {r[0] for r in conn.execute("SELECT uid FROM validations")},
            "targets": {r[0] for r in conn.execute("SELECT training_uid FROM times_to_target")},
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
        (to_target,) = conn.execute("SELECT COUNT(*) FROM times_to_target JOIN trainings ON uid = "
                                    "training_uid WHERE network_id = ? AND status = 'complete'",
                                    (nid,)).fetchone()
        assert to_target == 1
    statuses = [s for (s,) in conn.execute("SELECT status FROM runs ORDER BY started, rowid")]
    assert statuses == ["interrupted", "complete"]
    (errors,) = conn.execute("SELECT COUNT(*) FROM errors").fetchone()
    assert errors == 0
    conn.close()


# Runs the CLI with Store.add_validation storing the validation and then killing the process
# (SIGKILL: no handler, no cleanup) when the KILL_AT-th validation of the run has been stored.
_KILLED_AT_A_VALIDATION = """
import os, signal, sys
from dnncost.study.store.store import Store

real, stored = Store.add_validation, []

def add_validation(self, training_uid, record):
    real(self, training_uid, record)
    stored.append(record)
    if len(stored) == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)

Store.add_validation = add_validation
from dnncost.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_during_the_time_to_accuracy_stage_then_rerun_resumes(tmp_path):
    db, out = tmp_path / "study.sqlite", tmp_path / "report"
    args = ["study", "--quick", "--no-progress", "--db", str(db), "--out", str(out)]
    # --quick: 1 epoch of 64 images at batch 8, 2 validations an epoch; the networks train in
    # order, so the 3rd validation is the second network's first: the first network's run is
    # complete, the second's is killed half-way
    killed = subprocess.run([sys.executable, "-c", _KILLED_AT_A_VALIDATION, *args],
                            env={**os.environ, "KILL_AT": "3"}, capture_output=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    conn = sqlite3.connect(db)
    done_before = conn.execute("SELECT t.uid, n.name FROM trainings t JOIN networks n ON n.id = "
                               "t.network_id WHERE t.status = 'complete'").fetchall()
    timings_before = {r[0] for r in conn.execute("SELECT uid FROM step_timings")}
    killed_run = conn.execute("SELECT uid FROM runs").fetchone()[0]
    assert [name for _, name in done_before] == [QUICK.models[0]]
    assert conn.execute("SELECT COUNT(*) FROM validations").fetchone()[0] == 3
    conn.close()

    rerun = subprocess.run([sys.executable, "-m", "dnncost.cli", *args], capture_output=True, text=True,
                           timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (out / "report.html").is_file() and "wall time" in rerun.stdout
    conn = sqlite3.connect(db)
    trainings = conn.execute("SELECT t.uid, n.name, t.status, (SELECT COUNT(*) FROM validations v "
                             "WHERE v.training_uid = t.uid), (SELECT COUNT(*) FROM times_to_target x "
                             "WHERE x.training_uid = t.uid) FROM trainings t JOIN networks n ON "
                             "n.id = t.network_id ORDER BY t.started, t.rowid").fetchall()
    first, second, *rest = QUICK.models
    # the finished run kept, not redone; the killed one marked and kept with its one validation;
    # each network's complete run with its 2 validations and its time to the target
    assert trainings[0] == (done_before[0][0], first, "complete", 2, 1)
    assert trainings[1][1:] == (second, "interrupted", 1, 0)
    assert [t[1:] for t in trainings[2:]] == [(name, "complete", 2, 1) for name in (second, *rest)]
    assert timings_before <= {r[0] for r in conn.execute("SELECT uid FROM step_timings")}
    (retimed,) = conn.execute("SELECT COUNT(*) FROM step_timings WHERE run_uid != ? AND remeasure = 0",
                              (killed_run,)).fetchone()
    assert retimed == 0  # every planned repeat was stored before the kill: none timed again
    statuses = [s for (s,) in conn.execute("SELECT status FROM runs ORDER BY started, rowid")]
    assert statuses == ["interrupted", "complete"]
    stages = dict(conn.execute("SELECT stage, wall_s FROM stage_times WHERE run_uid = ?", (killed_run,)))
    assert {"count", "time"} <= set(stages)  # kept as the killed run went
    conn.close()
