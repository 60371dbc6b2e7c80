"""The results store: schema and its version, refusing foreign/unreadable/newer files, transactions,
a full disk that loses nothing finished, the single-writer lock, and merging without duplicates."""
from __future__ import annotations

import math
import sqlite3

import pytest

from dnncost.core.errors import StoreError
from dnncost.distributed.records import DataParallelStep
from dnncost.study.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    CountRow,
    NetworkRow,
    TimingRow,
    merge,
    migrate,
    open_store,
)
from dnncost.training.records import EpochRecord, TimeToTarget, ValidationRecord, time_to_target


def _count(mode: str = "train") -> CountRow:
    return CountRow(mode=mode, params=10, trainable_params=10, macs=100, flops=250, bytes=1000,
                    op_count=7, activation_bytes=40, peak_bytes=80,
                    by_layer_type={"Conv2d": {"macs": 100, "flops": 200, "bytes": 800}},
                    unsupported={})


def _network(store, name: str = "net", *, fingerprint: str = "machine-a", config_hash: str = "cfg1"):
    store.put_environment(fingerprint, {"cpu_model": "test cpu"}, peak_flops_per_s=1e9,
                          bandwidth_bytes_per_s=None, calibration="test")
    return store.network_id(NetworkRow(
        name=name, family="other", config_hash=config_hash, fingerprint=fingerprint, config={"batch_size": 4},
        input_shape="3x8x8", batch_size=4, dataset="digits", device="cpu", threads=1))


def _fill(store, names=("a", "b"), *, fingerprint: str = "machine-a") -> str:
    _network(store, names[0], fingerprint=fingerprint)  # the environment row comes first
    run = store.start_run(command="dnncost study", config={}, config_hash="cfg1",
                          fingerprint=fingerprint)
    for name in names:
        nid = _network(store, name, fingerprint=fingerprint)
        store.put_count(nid, _count("train"))
        store.put_count(nid, _count("eval"))
        store.add_timing(nid, run, TimingRow(
            mode="train", samples=[0.1, 0.2, 0.3], median_s=0.2, iqr_s=0.1, threads=1,
            peak_memory_bytes=None))
        training = store.start_training(nid, run, epochs_planned=1, dataset="digits")
        store.add_epoch(training, EpochRecord(1, 1.0, 0.2, 0.01, 0.01, 2.0, 0.5, 1.9, 0.6, 64, 16, 16))
        store.finish_training(training, "complete")
        store.put_breakdown(nid, {"Conv2d": (0.1, 200), "(between operators)": (0.05, 0)})
    store.finish_run(run, "complete")
    return run


def test_new_store_is_marked_and_versioned(tmp_path):
    path = tmp_path / "sub" / "study.sqlite"
    with open_store(path) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        _fill(store)
    with open_store(path, create=False) as store:  # reopening keeps everything
        results = store.network_results()
    assert [r.name for r in results] == ["a", "b"]
    a = results[0]
    assert a.counts["train"].flops == 250 and a.steps("train")[0].samples == (0.1, 0.2, 0.3)
    assert a.completed_trainings[0].epochs[0].val_accuracy == 0.6
    assert a.breakdown["Conv2d"] == (0.1, 200)
    assert (a.world_size, a.backend) == (1, "none")  # defaults for a later data-parallel study


def test_foreign_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a dnncost results store.*customers"):
        open_store(path)


def test_non_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("these are my notes, not a database\n")
    with pytest.raises(StoreError, match="not an SQLite database"):
        open_store(path)
    assert path.read_text().startswith("these are my notes")  # untouched


def test_truncated_database_is_unreadable(tmp_path):
    path = tmp_path / "study.sqlite"
    with open_store(path) as store:
        _fill(store)
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\x00" * 40 + data[140:2000])  # header kept, pages broken
    with pytest.raises(StoreError):
        with open_store(path) as store:
            store.network_results()


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "study.sqlite"
    open_store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer dnncost"):
        open_store(path)


def test_folder_and_missing_file(tmp_path):
    with pytest.raises(StoreError, match="is a folder"):
        open_store(tmp_path)
    with pytest.raises(StoreError, match="no results database"):
        open_store(tmp_path / "missing.sqlite", create=False)


def test_migrations_apply_in_order_each_with_its_version(tmp_path):
    from dnncost.study.store import MIGRATIONS

    with open_store(tmp_path / "s.sqlite") as store:
        steps = {**MIGRATIONS, SCHEMA_VERSION + 1: "ALTER TABLE runs ADD COLUMN note TEXT;"}
        assert migrate(store, SCHEMA_VERSION, migrations=steps) == SCHEMA_VERSION + 1
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        columns = [r[1] for r in store.conn.execute("PRAGMA table_info(runs)")]
        assert "note" in columns
        broken = {SCHEMA_VERSION + 2: "ALTER TABLE no_such_table ADD COLUMN x TEXT;"}
        with pytest.raises(StoreError):
            migrate(store, SCHEMA_VERSION + 1, migrations=broken)
        # a failed migration leaves the version where it was
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_transaction_rolls_back_on_error(tmp_path):
    with open_store(tmp_path / "s.sqlite") as store:
        nid = _network(store)
        with pytest.raises(RuntimeError):
            with store.transaction("a test") as c:
                c.execute("INSERT INTO counts (network_id, mode, params, trainable_params, macs, "
                          "flops, bytes, op_count, activation_bytes, peak_bytes, by_layer_type, "
                          "unsupported) VALUES (?, 'eval', 1, 1, 1, 1, 1, 1, 1, 1, '{}', '{}')", (nid,))
                raise RuntimeError("fails half-way")
        assert not store.has_count(nid, "eval")


def test_full_disk_is_a_clear_error_and_loses_nothing_finished(tmp_path):
    path = tmp_path / "s.sqlite"
    with open_store(path) as store:
        nid = _network(store)
        run = store.start_run(command="x", config={}, config_hash="cfg1", fingerprint="machine-a")
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count = {pages + 8}")  # a disk with ~8 pages left
        stored = 0
        with pytest.raises(StoreError, match="full.*kept.*rerun the same command"):
            for _ in range(1000):
                store.add_timing(nid, run, TimingRow(
                    mode="train", samples=[0.123456789] * 200, median_s=0.1, iqr_s=0.0, threads=1,
                    peak_memory_bytes=None))
                stored += 1
        assert 0 < stored < 1000
    with open_store(path) as store:  # every timing stored before the disk filled is there
        assert store.timing_repeats(nid, "train") == stored


def test_one_writer_at_a_time(tmp_path):
    path = tmp_path / "s.sqlite"
    with open_store(path) as first, open_store(path) as second:
        first.lock()
        with pytest.raises(StoreError, match="another dnncost run"):
            second.lock()
        first.unlock()
        second.lock()  # free again once the first lets go


def test_merge_combines_machines_without_duplicates(tmp_path):
    a, b, out = tmp_path / "a.sqlite", tmp_path / "b.sqlite", tmp_path / "out.sqlite"
    with open_store(a) as store:
        _fill(store, ("x", "y"), fingerprint="machine-a")
    with open_store(b) as store:
        _fill(store, ("x",), fingerprint="machine-b")
    copy_of_a = tmp_path / "a-copy.sqlite"
    copy_of_a.write_bytes(a.read_bytes())
    added = merge([a, b, copy_of_a], out)
    assert added["networks"] == 3  # x and y on machine a, x on machine b; the copy adds nothing
    assert added["step_timings"] == 3 and added["epochs"] == 3
    with open_store(out) as store:
        results = store.network_results()
        keys = sorted((r.name, r.fingerprint) for r in results)
        assert keys == [("x", "machine-a"), ("x", "machine-b"), ("y", "machine-a")]
        assert all(len(r.timings) == 1 and len(r.counts) == 2 for r in results)
        assert len(store.groups()) == 2  # one per machine
    again = merge([a, b], out)
    assert sum(again.values()) == 0  # merging twice adds nothing


def test_merge_refuses_foreign_source(tmp_path):
    foreign = tmp_path / "f.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(StoreError, match="not a dnncost"):
        merge([foreign], tmp_path / "out.sqlite")


def _step(**overrides) -> DataParallelStep:
    fields = dict(samples=(0.3, 0.4, 0.5), median_s=0.4, iqr_s=0.1, threads=1, world_size=2,
                  backend="gloo", allreduce_samples=(0.1, 0.1, 0.2), allreduce_s_per_step=0.1,
                  allreduce_bytes_per_step=648, buckets_per_step=1, gradient_bytes=648,
                  single_process_median_s=0.2, efficiency=0.5, launcher="spawn")
    return DataParallelStep(**{**fields, **overrides})


def _data_parallel(store, nid: int, run: str) -> str:
    return store.add_data_parallel_timing(nid, run, _step())


def test_data_parallel_timing_is_stored_with_its_allreduce(tmp_path):
    with open_store(tmp_path / "s.sqlite") as store:
        run = _fill(store, ("a",))
        (nid,) = [r[0] for r in store.conn.execute("SELECT id FROM networks")]
        assert not store.has_data_parallel(nid, world_size=2, backend="gloo")
        uid = _data_parallel(store, nid, run)
        assert store.has_data_parallel(nid, world_size=2, backend="gloo")
        assert not store.has_data_parallel(nid, world_size=4, backend="gloo")
        # the single-process repeats the study resumes by are counted apart from it
        assert store.timing_repeats(nid, "train") == 1
        assert store.timing_repeats(nid, "train", world_size=2) == 1
        with pytest.raises(StoreError, match="world_size >= 2"):
            store.add_data_parallel_timing(nid, run, _step(world_size=1, backend="none"))
        (result,) = store.network_results()
    (timing, comm), = result.data_parallel()
    assert timing.uid == uid and (timing.world_size, timing.backend, timing.mode) == (2, "gloo", "train")
    assert comm.samples == (0.1, 0.1, 0.2) and comm.allreduce_bytes_per_step == 648
    assert (comm.single_process_median_s, comm.efficiency, comm.launcher) == (0.2, 0.5, "spawn")
    assert len(result.steps("train", world_size=1)) == 1 and len(result.steps("train")) == 2


_V1_ROWS = """
INSERT INTO environments VALUES ('machine-a', '{"cpu_model": "old cpu"}', 1e9, NULL, 'test');
INSERT INTO runs VALUES ('run1', '2026-01-01T00:00:00+00:00', '2026-01-01T00:01:00+00:00',
    'complete', 'dnncost study', '{}', 'cfg1', 'machine-a');
INSERT INTO networks VALUES (1, 'a', 'other', 'cfg1', 'machine-a', '{}', '3x8x8', 4, 'digits',
    'cpu', 1, 1, 'none');
INSERT INTO networks VALUES (2, 'b', 'other', 'cfg1', 'machine-a', '{}', '3x8x8', 4, 'digits',
    'cpu', 1, 1, 'none');
INSERT INTO counts VALUES (1, 'train', 10, 10, 100, 250, 1000, 7, 40, 80, '{}', '{}');
INSERT INTO step_timings VALUES ('t1', 1, 'run1', 'train', '[0.1, 0.2, 0.3]', 0.2, 0.1, 1, NULL,
    1, 'none', '2026-01-01T00:00:30+00:00');
INSERT INTO trainings VALUES ('tr1', 1, 'run1', 'complete', 1, 'digits',
    '2026-01-01T00:00:40+00:00', '2026-01-01T00:00:50+00:00');
INSERT INTO epochs VALUES ('e1', 'tr1', 1, 1.0, 0.2, 0.01, 0.01, 2.0, 0.5, NULL, 0.6, 64, 16, 16);
INSERT INTO breakdowns VALUES (1, 'Conv2d', 0.1, 200);
"""  # the rows as dnncost with schema 1 wrote them (its column order), one NaN loss as NULL


def _version_1_store(path) -> None:
    """A results file exactly as dnncost with schema version 1 left it."""
    from dnncost.study.store import MIGRATIONS, Store

    v1 = Store(sqlite3.connect(str(path), isolation_level=None), path)
    assert migrate(v1, 0, migrations={1: MIGRATIONS[1]}) == 1
    v1.conn.executescript(_V1_ROWS)
    v1.close()


def test_version_1_store_migrates_and_keeps_its_results(tmp_path):
    path = tmp_path / "v1.sqlite"
    _version_1_store(path)
    with open_store(path, create=False) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        results = store.network_results()
        assert [r.name for r in results] == ["a", "b"]
        assert results[0].steps("train")[0].samples == (0.1, 0.2, 0.3)
        assert results[0].allreduce == {}  # old results have no data-parallel part
        (epoch,) = results[0].completed_trainings[0].epochs
        assert epoch.val_accuracy == 0.6 and math.isnan(epoch.val_loss)  # NULL reads back as NaN
        assert store.groups()[0].operator_model is None  # schema 3's column, empty for old rows
        run = store.runs()[0].uid
        _data_parallel(store, 1, run)  # and the new table takes new ones
        assert store.has_data_parallel(1, world_size=2, backend="gloo")


def test_merge_copies_data_parallel_results_once(tmp_path):
    a, out = tmp_path / "a.sqlite", tmp_path / "out.sqlite"
    with open_store(a) as store:
        run = _fill(store, ("x",))
        _data_parallel(store, 1, run)
    added = merge([a], out)
    assert added["allreduce_timings"] == 1 and added["step_timings"] == 2
    assert merge([a], out)["allreduce_timings"] == 0
    with open_store(out) as store:
        (result,) = store.network_results()
    (timing, comm), = result.data_parallel()
    assert timing.world_size == 2 and comm.gradient_bytes == 648


# -- faults: damage, concurrency, read-only sources ----------------------------------------------------
def _damage_a_page(path) -> None:
    """Overwrite page 2 (the root page of the first table, environments) with garbage, keeping the
    file's size."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")  # the page size, header offset 16 (sqlite file format)
    data[page:2 * page] = b"\xa5" * page  # page 2 spans bytes [page, 2 * page)
    path.write_bytes(bytes(data))


def test_damaged_page_of_intact_size_is_reported_in_plain_words(tmp_path, capsys):
    from dnncost.cli import main

    path = tmp_path / "study.sqlite"
    with open_store(path) as store:
        _fill(store, ("a", "b", "c"))
    size = path.stat().st_size
    _damage_a_page(path)
    assert path.stat().st_size == size  # same size: the truncation check cannot see it
    with pytest.raises(StoreError, match="is damaged"):
        open_store(path)
    with pytest.raises(StoreError, match="is damaged"):
        open_store(path, read_only=True)
    assert main(["report", "--db", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "is damaged" in err and "Traceback" not in err


def _open_new(path: str, barrier) -> str:
    barrier.wait()  # every process opens the new file at the same moment
    try:
        with open_store(path) as store:
            return str(store.conn.execute("PRAGMA user_version").fetchone()[0])
    except StoreError as exc:
        return f"error: {exc}"


def test_concurrent_first_opens_of_a_new_store_all_succeed(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        for attempt in range(3):
            path = str(tmp_path / f"new{attempt}.sqlite")
            barrier = manager.Barrier(3)
            with ctx.Pool(3) as pool:
                outcomes = pool.starmap(_open_new, [(path, barrier)] * 3)
            assert outcomes == [str(SCHEMA_VERSION)] * 3, outcomes



def test_a_first_open_reads_the_file_as_of_one_moment(tmp_path, monkeypatch):
    """The race behind a rare failure of the test above: another process migrated the new file
    between this open's read of its application id (0: not yet ours) and of its tables (there now),
    and the open called it a foreign database. The other process is made to try exactly there."""
    import threading

    from dnncost.study.store import store as store_module

    path = tmp_path / "new.sqlite"
    other: list[str] = []

    def open_elsewhere() -> None:
        try:
            with open_store(path):
                other.append("migrated")
        except StoreError as exc:  # held off by this open's reads until its short timeout
            other.append(f"waited: {exc}")

    class Interleaved(sqlite3.Connection):
        fired = False

        def execute(self, sql, *args):  # noqa: ANN001, ANN202
            if sql == "PRAGMA user_version" and not Interleaved.fired:  # after the application id
                Interleaved.fired = True
                monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.5)  # the other open's wait
                thread = threading.Thread(target=open_elsewhere)
                thread.start()
                thread.join()
            return super().execute(sql, *args)

    real_connect = sqlite3.connect

    def connect_first_interleaved(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        monkeypatch.setattr(sqlite3, "connect", real_connect)  # this open's connection only
        return real_connect(*args, factory=Interleaved, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect_first_interleaved)
    with open_store(path) as store:
        version = store.conn.execute("PRAGMA user_version").fetchone()[0]
    assert Interleaved.fired and len(other) == 1
    assert version == SCHEMA_VERSION

def _state(folder) -> dict[str, tuple[bytes, int]]:
    """Every file of ``folder``: its bytes and modification time (ns)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_reading_never_modifies_a_source_even_of_an_old_schema(tmp_path, capsys):
    from dnncost.cli import main

    folder = tmp_path / "readonly"
    folder.mkdir()
    old, current = folder / "v1.sqlite", folder / "current.sqlite"
    _version_1_store(old)
    with open_store(current) as store:
        _fill(store, ("x",), fingerprint="machine-b")
    folder.chmod(0o555)  # a read-only folder (root may still write: the check below is by content)
    try:
        before = _state(folder)
        with open_store(old, read_only=True) as store:  # migrated in memory, read as current
            assert [r.name for r in store.network_results()] == ["a", "b"]
            with pytest.raises(StoreError, match="read-only"):
                store.lock()
        added = merge([old, current], tmp_path / "merged.sqlite")
        assert added["networks"] == 3 and added["epochs"] == 2
        assert main(["report", "--db", str(old), "--out", str(tmp_path / "report")]) == 0
        capsys.readouterr()
        assert _state(folder) == before  # same files, bytes and times: nothing was written
    finally:
        folder.chmod(0o755)
    with open_store(tmp_path / "merged.sqlite", read_only=True) as store:
        assert sorted(r.name for r in store.network_results()) == ["a", "b", "x"]


def test_empty_file_is_not_a_store_for_reading(tmp_path, capsys):
    from dnncost.cli import main

    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with pytest.raises(StoreError, match="empty file"):
        open_store(empty, read_only=True)
    assert main(["report", "--db", str(empty), "--out", str(tmp_path / "r")]) == 2
    assert "empty file" in capsys.readouterr().err
    assert empty.read_bytes() == b""  # no schema written into it
    with open_store(empty) as store:  # a study may start a new store in an empty file
        assert store.result_count() == 0


def test_lock_file_that_cannot_be_created_is_a_clear_error(tmp_path, monkeypatch):
    import os

    with open_store(tmp_path / "s.sqlite") as store:
        def refuse(path, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(os, "open", refuse)  # what a read-only folder does to a non-root user
        with pytest.raises(StoreError, match="cannot create the lock file.*writable folder"):
            store.lock()


def test_every_table_is_merged_and_rows_round_trip_by_name(tmp_path):
    from dnncost.study.store import MERGE_ORDER

    with open_store(tmp_path / "s.sqlite") as store:
        tables = {r[0] for r in store.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
        assert set(MERGE_ORDER) == tables  # a new table must be placed in the merge order
        nid = _network(store)
        store.put_environment("machine-a", {"cpu_model": "test cpu"}, peak_flops_per_s=None,
                              bandwidth_bytes_per_s=None, calibration=None,
                              operator_model={"classes": {}})
        row = _count("eval")
        store.put_count(nid, row)
        assert store.count_row(nid, "eval") == row  # written and read by column name, unchanged
        env = store.environment("machine-a")
        assert env.peak_flops_per_s == 1e9  # None kept what was stored
        assert env.operator_model == {"classes": {}}


_KILLED_WRITER = """
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA cache_size = 1")  # spill changed pages into the file before the commit
c.execute("BEGIN IMMEDIATE")
c.execute("DELETE FROM step_timings")
c.execute("UPDATE runs SET status = 'failed'")
os._exit(0)  # dies like SIGKILL: no rollback, a hot journal stays beside the changed file
"""


def test_reading_a_store_a_killed_writer_left_gives_its_committed_state(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "s.sqlite"
    with open_store(path) as store:
        _fill(store, ("a", "b"))
        committed = store.result_count()
    subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(path)], check=True)
    journal = tmp_path / "s.sqlite-journal"
    assert journal.stat().st_size > 0
    before = _state(tmp_path)
    with open_store(path, read_only=True) as store:  # read from a rolled-back copy
        assert store.result_count() == committed and store.runs()[0].status == "complete"
    assert _state(tmp_path) == before  # the file and its journal untouched
    with open_store(path) as store:  # a writer rolls the journal back as SQLite always does
        assert store.result_count() == committed


def test_repeat_conditions_round_trip_and_remeasures_are_not_planned_repeats(tmp_path):
    from dnncost.study.store import RepeatConditions

    a, out = tmp_path / "a.sqlite", tmp_path / "out.sqlite"
    probed = RepeatConditions(cpu_samples=(0.09, 0.1), probe_before_s=1e-3, probe_after_s=3e-3,
                              probe_reference_s=1e-3, load_average=1.5, steal_share=0.0,
                              others_share=0.25, cpu_mhz=2450.0, remeasure=True)
    with open_store(a) as store:
        run = _fill(store, ("x",))  # one planned repeat, stored without conditions
        store.add_timing(1, run, TimingRow(
            mode="train", samples=[0.1, 0.2], median_s=0.15, iqr_s=0.05, threads=1, peak_memory_bytes=None,
            conditions=probed))
        assert store.timing_repeats(1, "train") == 1  # the re-measure is not a planned repeat
        old, new = store.timing_rows(1, "train")
        assert old.conditions == RepeatConditions()  # nothing recorded: all None, not a re-measure
        assert new.conditions == probed and new.conditions.probe_s == pytest.approx(2e-3)  # (1+3)/2
    merge([a], out)
    with open_store(out) as store:
        (result,) = store.network_results()
    assert [t.conditions.remeasure for t in result.steps("train")] == [False, True]
    assert result.steps("train")[1].conditions.cpu_samples == (0.09, 0.1)


def test_old_store_reads_repeats_without_conditions(tmp_path):
    path = tmp_path / "v1.sqlite"
    _version_1_store(path)
    with open_store(path, read_only=True) as store:
        (step, *_) = store.network_results()[0].steps("train")
    assert step.conditions.probe_s is None and step.conditions.remeasure is False


# -- schema 10: time-to-accuracy and the stages of a run ---------------------------------------------
def _validation(index: int, accuracy: float) -> ValidationRecord:
    # one validation per 8 steps of 32 samples (0.25 of a 1024-image epoch): 2 s of training and
    # 0.5 s of validation each
    return ValidationRecord(index=index, epoch=(index - 1) // 4 + 1, epochs=index / 4, steps=8 * index,
                            samples=256 * index, train_time_s=2.0 * index, val_time_s=0.5 * index,
                            train_data_time_s=0.0, val_data_time_s=0.0, val_loss=1.0 / index,
                            val_accuracy=accuracy)


def _run_to_target(store, nid: int, run: str, *, seed: int = 0) -> tuple[str, TimeToTarget]:
    """A training run from ``seed`` that reaches 0.9 at its third validation."""
    training = store.start_training(nid, run, epochs_planned=3, dataset="digits", seed=seed)
    validations = [_validation(i, a) for i, a in enumerate((0.5, 0.8, 0.92), start=1)]
    for v in validations:
        store.add_validation(training, v)
    reached = time_to_target(validations, target_accuracy=0.9, max_epochs=3, validations_per_epoch=4)
    store.put_time_to_target(training, reached)
    store.finish_training(training, "complete")
    return training, reached


def test_validations_and_the_time_to_target_round_trip(tmp_path):
    with open_store(tmp_path / "s.sqlite") as store:
        run = _fill(store, ("a",))  # a fixed-epoch run from seed 0, no validations stored
        _, reached = _run_to_target(store, 1, run, seed=1)
        assert store.has_complete_training(1, seed=1) and not store.has_complete_training(1, seed=2)
        (result,) = store.network_results()
    fixed, to_target = result.trainings
    assert (fixed.seed, fixed.validations, fixed.time_to_target) == (0, (), None)
    assert to_target.seed == 1 and [v.index for v in to_target.validations] == [1, 2, 3]
    assert to_target.validations[2] == _validation(3, 0.92)  # every field by its column, "index" too
    t = to_target.time_to_target
    assert t == reached and t.reached is True  # SQLite's 1 read back as True
    assert (t.steps, t.samples, t.epochs, t.train_time_s, t.val_time_s) == (24, 768, 0.75, 6.0, 1.5)
    assert result.training(1) is to_target and result.training(2) is None
    assert [t.seed for t in result.seed_trainings()] == [0, 1]


def test_stage_times_are_kept_per_run_and_refreshed(tmp_path):
    with open_store(tmp_path / "s.sqlite") as store:
        run = _fill(store, ("a",))
        store.put_stage_times(run, {"time": 10.0, "train": 4.0})
        store.put_stage_times(run, {"train": 6.5, "work": 1.0})  # the run's totals so far, replaced
        other = store.start_run(command="x", config={}, config_hash="cfg2", fingerprint="machine-a")
        store.put_stage_times(other, {"time": 99.0})
        assert store.stage_times(config_hash="cfg1", fingerprint="machine-a") == {
            run: {"time": 10.0, "train": 6.5, "work": 1.0}}


_V10_TRAINING = """
INSERT INTO trainings VALUES ('tr2', 2, 'run1', 'running', 3, 'digits',
    '2026-01-01T00:00:55+00:00', NULL);
"""  # a training left running by a killed study of schema 10


def test_version_10_store_migrates_to_time_to_accuracy(tmp_path):
    from dnncost.study.store import MIGRATIONS, Store

    path = tmp_path / "v10.sqlite"
    v10 = Store(sqlite3.connect(str(path), isolation_level=None), path)
    assert migrate(v10, 0, migrations={1: MIGRATIONS[1]}) == 1
    v10.conn.executescript(_V1_ROWS)  # results of schema 1, migrated through 10 as dnncost did
    assert migrate(v10, 1, migrations={v: MIGRATIONS[v] for v in range(2, 11)}) == 10
    v10.conn.executescript(_V10_TRAINING)
    v10.close()
    with open_store(path) as store:  # schema 11 (and every later one) added
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 11
        a, b = store.network_results()
        (old,) = a.trainings
        assert (old.seed, old.validations, old.time_to_target) == (0, (), None)  # seed 0 by default
        assert store.has_complete_training(1, seed=0)  # a resumed study keeps the old run as seed 0's
        assert not store.has_complete_training(2)
        _run_to_target(store, 2, "run1")  # and the new tables take new rows
        store.put_stage_times("run1", {"train": 1.0})
        (new,) = [t for t in store.network_results()[1].trainings if t.status == "complete"]
    assert new.time_to_target is not None and len(new.validations) == 3


def test_merge_copies_validations_times_to_target_and_stage_times_once(tmp_path):
    a, out = tmp_path / "a.sqlite", tmp_path / "out.sqlite"
    with open_store(a) as store:
        run = _fill(store, ("x",))
        _run_to_target(store, 1, run, seed=1)
        store.put_stage_times(run, {"time": 3.0, "train": 2.0})
    added = merge([a], out)
    assert (added["validations"], added["times_to_target"], added["stage_times"]) == (3, 1, 2)
    again = merge([a], out)
    assert (again["validations"], again["times_to_target"], again["stage_times"]) == (0, 0, 0)
    with open_store(out) as store:
        (result,) = store.network_results()
        stages = store.stage_times(config_hash="cfg1", fingerprint="machine-a")
    assert result.training(1) is not None and result.training(1).time_to_target.steps == 24
    assert stages == {run: {"time": 3.0, "train": 2.0}}
