"""The results store: schema and its version, refusing foreign/unreadable/newer files, transactions,
a full disk that loses nothing finished, the single-writer lock, and merging without duplicates."""
from __future__ import annotations

import sqlite3

import pytest

from dnncost.errors import StoreError
from dnncost.study.store import APPLICATION_ID, SCHEMA_VERSION, CountRow, EpochRow, merge, migrate, open_store


def _count(mode: str = "train") -> CountRow:
    return CountRow(mode=mode, params=10, trainable_params=10, macs=100, flops=250, bytes=1000,
                    op_count=7, activation_bytes=40, peak_bytes=80,
                    by_layer_type={"Conv2d": {"macs": 100, "flops": 200, "bytes": 800}},
                    unsupported={})


def _network(store, name: str = "net", *, fingerprint: str = "machine-a", config_hash: str = "cfg1"):
    store.put_environment(fingerprint, {"cpu_model": "test cpu"}, peak_flops_per_s=1e9,
                          bandwidth_bytes_per_s=None, calibration="test")
    return store.network_id(name=name, family="other", config_hash=config_hash,
                            fingerprint=fingerprint, config={"batch_size": 4}, input_shape="3x8x8",
                            batch_size=4, dataset="digits", device="cpu", threads=1)


def _fill(store, names=("a", "b"), *, fingerprint: str = "machine-a") -> str:
    _network(store, names[0], fingerprint=fingerprint)  # the environment row comes first
    run = store.start_run(command="dnncost study", config={}, config_hash="cfg1",
                          fingerprint=fingerprint)
    for name in names:
        nid = _network(store, name, fingerprint=fingerprint)
        store.put_count(nid, _count("train"))
        store.put_count(nid, _count("eval"))
        store.add_timing(nid, run, mode="train", samples=[0.1, 0.2, 0.3], median_s=0.2, iqr_s=0.1,
                         threads=1, peak_memory_bytes=None)
        training = store.start_training(nid, run, epochs_planned=1, dataset="digits")
        store.add_epoch(training, EpochRow(1, 1.0, 0.2, 0.01, 0.01, 2.0, 0.5, 1.9, 0.6, 64, 16, 16))
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
                store.add_timing(nid, run, mode="train", samples=[0.123456789] * 200, median_s=0.1,
                                 iqr_s=0.0, threads=1, peak_memory_bytes=None)
                stored += 1
        assert 0 < stored < 1000
    with open_store(path) as store:  # every timing stored before the disk filled is there
        assert store.timing_repeats(nid, "train") == stored


def test_one_writer_at_a_time(tmp_path):
    path = tmp_path / "s.sqlite"
    with open_store(path) as first, open_store(path) as second:
        first.lock()
        with pytest.raises(StoreError, match="another study is writing"):
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


def _data_parallel(store, nid: int, run: str, *, backend: str = "gloo") -> str:
    return store.add_data_parallel_timing(
        nid, run, samples=[0.3, 0.4, 0.5], median_s=0.4, iqr_s=0.1, threads=1, world_size=2,
        backend=backend, allreduce_samples=[0.1, 0.1, 0.2], allreduce_s_per_step=0.1,
        allreduce_bytes_per_step=648, buckets_per_step=1, gradient_bytes=648,
        single_process_median_s=0.2, efficiency=0.5, launcher="spawn")


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
            store.add_data_parallel_timing(
                nid, run, samples=[0.1], median_s=0.1, iqr_s=0.0, threads=1, world_size=1,
                backend="none", allreduce_samples=[0.0], allreduce_s_per_step=0.0,
                allreduce_bytes_per_step=0, buckets_per_step=0, gradient_bytes=0,
                single_process_median_s=None, efficiency=None, launcher="spawn")
        (result,) = store.network_results()
    (timing, comm), = result.data_parallel()
    assert timing.uid == uid and (timing.world_size, timing.backend, timing.mode) == (2, "gloo", "train")
    assert comm.samples == (0.1, 0.1, 0.2) and comm.allreduce_bytes_per_step == 648
    assert (comm.single_process_median_s, comm.efficiency, comm.launcher) == (0.2, 0.5, "spawn")
    assert len(result.steps("train", world_size=1)) == 1 and len(result.steps("train")) == 2


def test_version_1_store_migrates_and_keeps_its_results(tmp_path):
    from dnncost.study.store import MIGRATIONS, Store

    path = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(str(path), isolation_level=None)
    v1 = Store(conn, path)
    assert migrate(v1, 0, migrations={1: MIGRATIONS[1]}) == 1  # what dnncost with schema 1 wrote
    _fill(v1, ("a", "b"))
    v1.close()
    with open_store(path, create=False) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        results = store.network_results()
        assert [r.name for r in results] == ["a", "b"]
        assert results[0].steps("train")[0].samples == (0.1, 0.2, 0.3)
        assert results[0].allreduce == {}  # old results have no data-parallel part
        run = store.runs()[0]["uid"]
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
