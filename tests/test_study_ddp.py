"""`dnncost study --nproc N`: each network's training step also measured on N data-parallel
workers after its single-process work, stored at once, skipped on resume, a failure recorded while
the sweep goes on; the analysis ranks communication share against params and FLOPs, and the report
shows it in Markdown, HTML and CSV/JSON."""
from __future__ import annotations

import json
import textwrap

import pytest

from dnncost.cli import main
from dnncost.commands.study import reproduce_command
from dnncost.distributed.launch import DistributedWorkerError
from dnncost.distributed.records import DataParallelStep
from dnncost.reporting.report import write_report
from dnncost.study.analysis import analyze
from dnncost.study.config import StudyConfig
from dnncost.study.findings import study_findings
from dnncost.study.store import CountRow, NetworkRow, open_store
from dnncost.study.sweep import run_study

TINY = textwrap.dedent("""
    from torch import nn

    def tiny():
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(4, 10))

    def wider():
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(8, 10))
""")


@pytest.fixture()
def specs(tmp_path):
    path = tmp_path / "tiny_models.py"
    path.write_text(TINY)
    return {name: f"{path}:{name}" for name in ("tiny", "wider")}


def _config(*names: str, **overrides) -> StudyConfig:
    base = dict(models=names, input_size=32, batch_size=4, epochs=0, repeats=1,
                step_budget_s=None, steps=2, warmup=1, breakdown=False, world_size=2,
                backend="gloo", predictor=False)
    base.update(overrides)
    return StudyConfig(**base)


def test_two_gloo_workers_stored_resumed_and_reported(tmp_path, specs):
    config = _config(specs["tiny"])
    db = tmp_path / "s.sqlite"
    with open_store(db) as store:
        first = run_study(config, store, progress=False)
        (net,) = store.network_results()
    assert first.complete, first.failed
    (timing, comm), = net.data_parallel()
    # tiny's trainable params: conv 4*3*3*3 + 4 = 112, linear 4*10 + 10 = 50 -> 162 float32 = 648 B
    assert comm.allreduce_bytes_per_step == comm.gradient_bytes == 648
    assert (timing.world_size, timing.backend, net.world_size, net.backend) == (2, "gloo", 2, "gloo")
    assert len(timing.samples) == 10 and len(comm.samples) == 10  # DDP_MIN_STEPS timed steps
    assert comm.single_process_median_s is not None and comm.efficiency == pytest.approx(
        comm.single_process_median_s / timing.median_s)
    planned = [t for t in net.steps("train", world_size=1) if not t.conditions.remeasure]
    assert len(planned) == 1  # the single-process repeat, kept apart (a drifted one re-measured)

    with open_store(db) as store:  # resuming measures nothing again
        again = run_study(config, store, progress=False)
        (net,) = store.network_results()
        files = write_report(study_findings(store), tmp_path / "report")
    assert again.measured == 0 and again.skipped == first.measured + first.skipped
    assert len(net.data_parallel()) == 1
    markdown = files.markdown.read_text()
    assert "communication share vs parameters" in markdown and "comm_share_vs_params.png" in markdown
    assert "648 B" in markdown and "communication share" in files.html.read_text()
    assert (files.folder / "figures" / "comm_share_vs_params.png").stat().st_size > 0
    csv = files.data_parallel_csv.read_text().splitlines()
    assert "comm_share" in csv[0] and len(csv) == 2
    payload = json.loads(files.json.read_text())
    assert payload[0]["data_parallel"]["networks"][0]["allreduce_bytes_per_step"] == 648


def test_failed_data_parallel_run_is_recorded_and_the_sweep_goes_on(tmp_path, specs, monkeypatch):
    import dnncost.distributed.data_parallel as ddp

    def broken(*args, **kwargs):
        raise DistributedWorkerError("worker 1 of 2 failed (on purpose)")

    monkeypatch.setattr(ddp, "measure_distributed", broken)
    with open_store(tmp_path / "s.sqlite") as store:
        summary = run_study(_config(specs["tiny"], specs["wider"]), store, progress=False)
        results = store.network_results()
        status = store.runs()[-1].status
    assert list(summary.failed) == [specs["tiny"], specs["wider"]]  # the second was still tried
    assert all(e.startswith("distributed: DistributedWorkerError") for e in summary.failed.values())
    assert status == "failed"
    for net in results:  # the single-process work before it is kept
        planned = [t for t in net.steps("train") if not t.conditions.remeasure]
        assert set(net.counts) == {"eval", "train"} and len(planned) == 1
        assert net.errors[0].stage == "distributed" and "on purpose" in net.errors[0].message


def test_command_line_flags_and_their_errors(tmp_path, capsys):
    assert reproduce_command(_config("lenet5"), db="s.sqlite").split()[-6:-2] == [
        "--nproc", "2", "--backend", "gloo"]  # the resume command keeps the workers
    assert _config("lenet5").config_hash != _config("lenet5", world_size=1, backend="none").config_hash
    db = tmp_path / "s.sqlite"
    for argv, message in (
            (["--nproc", "1"], "2 or more"),
            (["--backend", "gloo"], "--backend needs --nproc"),
            (["--nproc", "512"], "CPU core"),
            (["--nproc", "2", "--backend", "nccl"], "nccl|does not go with"),
    ):
        assert main(["study", "--quick", "--db", str(db), *argv]) == 2, argv
        assert any(part in capsys.readouterr().err for part in message.split("|")), argv
    assert not db.exists()  # refused before anything was stored
    with pytest.raises(Exception, match="needs gloo or nccl"):
        StudyConfig(models=("lenet5",), world_size=2)


def _count(params: int, flops: int) -> CountRow:
    return CountRow(mode="train", params=params, trainable_params=params, macs=flops // 2,
                    flops=flops, bytes=1, op_count=1, activation_bytes=1, peak_bytes=1,
                    by_layer_type={}, unsupported={})


def test_comm_share_ranks_against_params_and_flops(tmp_path):
    # four networks: params 1k < 2k < 3k < 4k with comm shares 0.1 < 0.2 < 0.3 < 0.4 -> rho = 1;
    # FLOPs in the order 4, 3, 2, 1 (reversed) -> rho = -1
    with open_store(tmp_path / "s.sqlite") as store:
        store.put_environment("fp", {}, peak_flops_per_s=None, bandwidth_bytes_per_s=None,
                              calibration=None)
        run = store.start_run(command="t", config={}, config_hash="h", fingerprint="fp")
        for i in range(1, 5):
            nid = store.network_id(NetworkRow(
                name=f"n{i}", family="other", config_hash="h", fingerprint="fp", config={},
                input_shape="3x8x8", batch_size=4, dataset="d", device="cpu", threads=1, world_size=2,
                backend="gloo"))
            store.put_count(nid, _count(1000 * i, 10 ** (5 - i)))
            store.add_data_parallel_timing(nid, run, DataParallelStep(
                samples=(1.0,), median_s=1.0, iqr_s=0.0, threads=1, world_size=2,
                backend="gloo", allreduce_samples=(0.1 * i,), allreduce_s_per_step=0.1 * i,
                allreduce_bytes_per_step=4000 * i, buckets_per_step=1, gradient_bytes=4000 * i,
                single_process_median_s=0.5, efficiency=0.5, launcher="spawn"))
        networks = store.network_results()
    dp = analyze(networks).data_parallel
    assert [r.name for r in dp.rows] == ["n1", "n2", "n3", "n4"]
    assert [round(r.comm_share, 6) for r in dp.rows] == [0.1, 0.2, 0.3, 0.4]
    assert dp.vs_params.rho == pytest.approx(1.0) and dp.vs_flops.rho == pytest.approx(-1.0)
    assert dp.vs_params.n == dp.vs_flops.n == 4
