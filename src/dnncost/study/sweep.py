"""The study: count, time and really train a set of networks, storing every result as it comes.

For each network :func:`run_study` counts its computation (params, MACs, forward and training-step
FLOPs, bytes, operator calls), times its training and validation steps (``repeats`` independent
repeats, each of timed steps filling ``step_budget_s``, or of ``steps`` steps; the repeats go
round-robin over the networks), optionally attributes step time to layer types, and trains it on
the dataset until its validation accuracy first reaches ``target_accuracy`` (time-to-accuracy:
every validation and the time to the target stored), its family's recipe epochs being the cap --
or, without a target, for exactly those epochs (the paper's fixed-epoch protocol). Each result is
written to the :mod:`dnncost.study.store` in its own transaction the moment it is measured;
rerunning the same configuration resumes, skipping what is stored (keyed by network, configuration
hash and machine fingerprint), a larger ``repeats`` adds repeats and a larger ``seeds`` training
runs. A network that fails has its error recorded and the sweep goes on. With ``world_size`` N >
1, each network's training step is also measured on N data-parallel workers (torch.distributed +
DistributedDataParallel, :mod:`dnncost.distributed.data_parallel`) after its single-process work:
step time, time with a gradient all-reduce in flight, its bytes, and the weak-scaling efficiency
against one process. The wall time of each stage of the run
(:mod:`dnncost.study.stages`) is stored with the run, and one progress bar weighted by each unit's
expected seconds (:mod:`dnncost.study.progress`) shows the time left.
"""
from __future__ import annotations

import contextlib
import math
import statistics
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

from dnncost.core.errors import DnncostError, StoreError
from dnncost.core.kinds import MODES, Mode, OptimizerKind
from dnncost.measuring.measurement import NOISE_THRESHOLD, NoisyMeasurementWarning
from dnncost.study.calibration import fit_quick_model, machine_calibration, study_focus
from dnncost.study.config import (
    SEED,
    StudyConfig,
    check_data_parallel,
    load_study_dataset,
    select_models,
)
from dnncost.study.plan import plan_units, seed_part, seeds, work_grid, work_networks
from dnncost.study.predicted import predict_with_stored_model
from dnncost.study.progress import (
    EPOCH_S,
    TARGET_SHARE_OF_CAP,
    Key,
    Progress,
    make_bar,
    repeat_seconds,
    training_seconds,
)
from dnncost.study.stages import Stage, StageClock
from dnncost.study.store import CountRow, NetworkRow, RepeatConditions, Store, TimingRow, WorkRow
from dnncost.study.work import WORK_STEP, measure_work
from dnncost.training.recipe import Recipe, recipe_for

if TYPE_CHECKING:
    from torch import nn

    from dnncost.measuring.interleave import StoredRepeats
    from dnncost.measuring.timing import StepTiming
    from dnncost.models.loading import LoadedModel
    from dnncost.training.data import DatasetSplit
    from dnncost.training.records import ValidationRecord

BREAKDOWN_STEPS = 2  # source: measured, two profiled steps give stable layer-type shares cheaply
BETWEEN_OPERATORS = "(between operators)"  # step time no operator accounts for (breakdown gap)
DDP_MIN_STEPS = 10  # source: our choice; timed data-parallel steps per network at least, so the
# median of the per-step all-reduce share is not one step's accident (spawning workers costs seconds)



# -- progress and results -----------------------------------------------------------------------------
@dataclass(frozen=True)
class StudySummary:
    """What a run of the study did."""

    run_uid: str
    networks: tuple[str, ...]
    failed: dict[str, str] = field(default_factory=dict)  # name -> 'stage: error'
    measured: int = 0  # results written by this run (a training run counts once)
    skipped: int = 0  # results already stored
    remeasured: int = 0  # timing repeats re-measured because their probe drifted (beyond measured)
    config_hash: str = ""
    fingerprint: str = ""
    stage_seconds: Mapping[str, float] = field(default_factory=dict)  # stage -> wall s (stored too)

    @property
    def complete(self) -> bool:
        return not self.failed


# -- the sweep ---------------------------------------------------------------------------------------
def run_study(config: StudyConfig, store: Store, *, progress: bool = True,
              command: str = "", port: int | None = None) -> StudySummary:
    """Run (or resume) ``config`` into ``store``; returns what was done.

    ``port``: the rendezvous port of the data-parallel workers (default: a free one each time).

    Results already in the store for this network, configuration and machine are skipped. A
    network that fails gets its error recorded and the sweep goes on. On KeyboardInterrupt the run
    is marked interrupted and the interrupt propagates; everything finished stays stored.
    StoreError (e.g. a full disk) stops the sweep: nothing more could be kept.
    """
    import torch

    from dnncost.core.device import resolve_device
    from dnncost.core.environment import current_environment, machine_fingerprint

    names = select_models(config)
    device = resolve_device(config.device)
    check_data_parallel(config)
    if config.epochs:
        from dnncost.training.data import parse_dataset_spec

        parse_dataset_spec(config.dataset)  # a bad spec fails here, not once per network
        # (dnncost study checks the data itself with check_dataset before it opens the store)
    threads = config.threads or torch.get_num_threads()
    fingerprint = machine_fingerprint(device, threads=threads)
    environment = current_environment(device, threads=threads).to_dict()
    store.put_environment(fingerprint, environment, peak_flops_per_s=None,
                          bandwidth_bytes_per_s=None, calibration=None)
    run_uid = store.start_run(command=command or f"dnncost.study.run_study (configuration "
                                                  f"{config.config_hash}, from Python)",
                              config=asdict(config), config_hash=config.config_hash,
                              fingerprint=fingerprint)
    progress_ = Progress(make_bar(progress), plan_units(config, names))
    sweep = _Sweep(config, store, run_uid=run_uid, fingerprint=fingerprint, threads=threads,
                   progress=progress_, port=port)
    clock = sweep.clock
    try:
        sweep.run(names)
        # Calibrated last, so that its large matmuls and 256 MiB copies run after the measurements
        # rather than just before them (and a resumed study keeps the peak its results were set
        # against). The per-operator time model found in the machine's calibration is stored
        # too, so that the report uses what the study saw, wherever it is rendered.
        progress_.describe("calibrating the machine's peak")
        with clock.timing(Stage.CALIBRATE):
            peak, bandwidth, source, operator_model = machine_calibration(store, fingerprint, device,
                                                                          threads)
        progress_.finish((Stage.CALIBRATE, None, ""))
        if operator_model is None and config.predictor and device.type == "cpu":
            progress_.describe("fitting the per-operator time model (quick calibration)")
            try:
                with clock.timing(Stage.OPERATOR_MODEL):
                    operator_model = fit_quick_model(threads, study_focus(config))
            except DnncostError as exc:  # optional: the measurements stand without it
                warnings.warn(f"the per-operator time model could not be fitted ({exc}); the "
                              "report has no predicted-vs-measured section", stacklevel=2)
            progress_.finish((Stage.OPERATOR_MODEL, None, ""))
        else:
            progress_.skip((Stage.OPERATOR_MODEL, None, ""))
        store.put_environment(fingerprint, environment, peak_flops_per_s=peak,
                              bandwidth_bytes_per_s=bandwidth, calibration=source,
                              operator_model=operator_model)
        progress_.describe("predicting each network's step (per-kernel model)")
        with clock.timing(Stage.PREDICT):
            predict_with_stored_model(store, config_hash=config.config_hash,
                                      fingerprint=fingerprint)
        progress_.finish((Stage.PREDICT, None, ""))
        sweep.keep_stage_times()
    except KeyboardInterrupt:
        sweep.interrupted()
        raise
    except BaseException:
        sweep.ended("failed")  # the run record does not stay 'running'
        raise
    finally:
        progress_.close()
    store.finish_run(run_uid, "complete" if not sweep.failed else "failed")
    return StudySummary(run_uid=run_uid, networks=tuple(names), failed=dict(sweep.failed),
                        measured=sweep.measured, skipped=sweep.skipped, remeasured=sweep.remeasured,
                        config_hash=config.config_hash, fingerprint=fingerprint,
                        stage_seconds=clock.by_name())


@dataclass
class _Network:
    """One network in the sweep: what resolving it gave, and whether it has failed."""

    name: str
    loaded: LoadedModel
    family: str
    shape: tuple[int, ...]
    nid: int
    model: nn.Module | None = None  # built once for timing, on first use
    failed: bool = False


def _stored_repeats(rows: Sequence[TimingRow]) -> StoredRepeats:
    """What the store holds of one step's repeats, for time_interleaved to resume from."""
    from dnncost.measuring.interleave import StoredRepeats
    from dnncost.measuring.probe import ProbeReading

    probes = tuple(ProbeReading(c.probe_before_s, c.probe_after_s, c.probe_reference_s)
                   if c.probe_before_s is not None and c.probe_after_s is not None else None
                   for c in (r.conditions for r in rows))
    extra = sum(1 for r in rows if r.conditions.remeasure)
    return StoredRepeats(planned=len(rows) - extra, remeasured=extra, probes=probes)


def _conditions(timing: StepTiming, *, remeasure: bool) -> RepeatConditions:
    """The machine around one timed repeat, as the store keeps it."""
    probe, load = timing.probe, timing.load
    return RepeatConditions(
        cpu_samples=timing.measurement.cpu_samples or None,
        probe_before_s=probe.before_s if probe else None,
        probe_after_s=probe.after_s if probe else None,
        probe_reference_s=probe.reference_s if probe else None,
        load_average=load.load_average if load else None,
        steal_share=load.steal_share if load else None,
        others_share=load.others_share if load else None,
        cpu_mhz=load.cpu_mhz if load else None, remeasure=remeasure)


class _Sweep:
    """One run through the networks, in three passes: load and count each network; time the
    repeats round-robin (repeat 1 of every network, then repeat 2, ...) so that a busy spell of
    the machine spreads over the networks instead of spoiling every repeat of one; then profile,
    train and (world size > 1) time data-parallel each network. The wall time of each stage is
    added up in ``clock`` and stored with the run as the run goes."""

    def __init__(self, config: StudyConfig, store: Store, *, run_uid: str, fingerprint: str,
                 threads: int, progress: Progress, port: int | None = None) -> None:
        self.config, self.store, self.run_uid, self.port = config, store, run_uid, port
        self.fingerprint, self.threads, self.progress = fingerprint, threads, progress
        self.clock = StageClock()
        self.failed: dict[str, str] = {}
        self.measured = 0
        self.skipped = 0
        self.remeasured = 0  # repeats beyond the plan, because a repeat's probe drifted
        self.training_uid: str | None = None
        self._datasets: dict[tuple[int, ...], DatasetSplit] = {}
        self._cap_seconds: dict[Key, float] = {}  # training runs: expected seconds of the whole cap

    def run(self, names: Sequence[str]) -> None:
        networks = [net for name in names if (net := self._prepare(name)) is not None]
        self.keep_stage_times()
        with self.clock.timing(Stage.TIME):
            self._time(networks)
        self.keep_stage_times()
        if self.config.epochs:
            self._plan_training(networks)
        for net in networks:
            if self.config.breakdown:
                self._guarded(net, Stage.BREAKDOWN, self._breakdown)
            if self.config.epochs:
                self._guarded(net, Stage.TRAIN, self._train)
            if self.config.world_size > 1:
                self._guarded(net, Stage.DISTRIBUTED, self._data_parallel)
            if self.config.whatif is not None:
                self._guarded(net, Stage.WHATIF, self._whatif)
            if net.name in work_networks(self.config, names):
                self._guarded(net, Stage.WORK, self._work)
            self.keep_stage_times()

    def advance(self, n: int, *, done: bool) -> None:
        """Count ``n`` results measured now (``done``: found stored)."""
        if done:
            self.skipped += n
        else:
            self.measured += n

    def keep_stage_times(self) -> None:
        """Store the wall time of each stage so far with the run (replacing what it stored)."""
        self.store.put_stage_times(self.run_uid, self.clock.by_name())

    def interrupted(self) -> None:
        self.ended("interrupted")

    def ended(self, status: str) -> None:
        """Mark the run (and a training in progress) ``status`` as it stops early; when the store
        itself failed (e.g. a full disk) the next run marks them 'interrupted' instead."""
        try:
            if self.training_uid is not None:
                self.store.finish_training(self.training_uid, status)
            self.keep_stage_times()
            self.store.finish_run(self.run_uid, status)
        except StoreError:
            pass  # start_run of the next study marks a run left 'running' as interrupted

    def _fail(self, name: str, nid: int | None, stage: Stage, exc: Exception) -> None:
        if self.training_uid is not None:
            self.store.finish_training(self.training_uid, "failed")
            self.training_uid = None
        self.store.add_error(nid, self.run_uid, stage=stage.value, error=exc,
                             traceback=traceback.format_exc())
        self.failed[name] = f"{stage.value}: {type(exc).__name__}: {exc}"
        self.progress.skip_network(name)  # its work to come leaves the estimate

    def _guarded(self, net: _Network, stage: Stage, step: Callable[[_Network], None], *,
                 timed: bool = True) -> None:
        """Run one stage of a network (``timed``: its wall time added to the stage's); an error is
        recorded and the sweep goes on without the network."""
        if net.failed:
            return
        self.progress.describe(f"{net.name}: {stage.label}")
        try:
            with self.clock.timing(stage) if timed else contextlib.nullcontext():
                step(net)
        except (KeyboardInterrupt, StoreError):
            raise
        except Exception as exc:  # a failing network must not stop the sweep: record, go on
            net.failed = True
            self._fail(net.name, net.nid, stage, exc)

    def _mark(self, key: Key, *, stored: bool) -> None:
        """Count one result and close its unit of progress: found stored, or measured now."""
        self.advance(1, done=stored)
        if stored:
            self.progress.skip(key)
        else:
            self.progress.finish(key)

    # -- the stages; each closes its units of progress --------------------------------------------
    def _prepare(self, name: str) -> _Network | None:
        """Resolve, register and count one network; None (error recorded) when that fails."""
        from dnncost.models import family_of
        from dnncost.models.loading import load_model

        self.progress.describe(f"{name}: {Stage.LOAD.label}")
        try:
            with self.clock.timing(Stage.LOAD):
                loaded = load_model(name)
            family = family_of(name)
            shape = tuple(loaded.input_shape)
            size = self.config.input_size
            if self.config.models and size is not None and size != shape[-1] and len(shape) == 3:
                shape = (shape[0], size, size)  # named networks run at the size asked for
            nid = self.store.network_id(NetworkRow(
                name=name, family=family, config_hash=self.config.config_hash, fingerprint=self.fingerprint,
                config=self.config.measured, input_shape="x".join(map(str, shape)),
                batch_size=self.config.batch_size, dataset=self.config.dataset, device=self.config.device,
                threads=self.threads, world_size=self.config.world_size, backend=self.config.backend))
        except (KeyboardInterrupt, StoreError):
            raise
        except Exception as exc:  # an unloadable network is recorded like any other failure
            self._fail(name, None, Stage.LOAD, exc)
            return None
        net = _Network(name, loaded, family, shape, nid)
        self._guarded(net, Stage.COUNT, self._count)
        return None if net.failed else net

    def _count(self, net: _Network) -> None:
        from dnncost.counting.counter import count

        key = (Stage.COUNT, net.name, "")
        if all(self.store.has_count(net.nid, mode) for mode in MODES):
            self._mark(key, stored=True)
            return
        for mode in reversed(MODES):  # eval first, as ever
            report = count(net.loaded.build("meta"), input_shape=net.shape,
                           batch_size=self.config.batch_size, mode=mode,
                           optimizer=self.config.optimizer, name=net.loaded.name)
            total = report.total()
            self.store.put_count(net.nid, CountRow(
                mode=mode, params=report.params, trainable_params=report.trainable_params,
                macs=total.macs, flops=total.flops, bytes=total.bytes, op_count=len(report.records),
                activation_bytes=report.activation_bytes, peak_bytes=report.peak_bytes,
                by_layer_type={k: v.to_dict() for k, v in report.by_module_type().items()},
                unsupported=report.unsupported()))
        self._mark(key, stored=False)

    def _model(self, net: _Network, *, seed: int = SEED):
        """A freshly initialised CPU instance of the network (seeded: the same in every run)."""
        import torch

        torch.manual_seed(seed)
        return net.loaded.build("cpu")

    def _time(self, networks: Sequence[_Network]) -> None:
        """Every network's train and eval step, ``repeats`` times, round-robin over the networks
        (dnncost.measuring.interleave: repeat 1 of each, then repeat 2, ..., the reference probe
        around each), then repeats whose probe drifted re-measured within the budget; each repeat
        stored the moment it is measured, with the probe, the machine's load and the CPU time per
        step beside it. Stored planned repeats are skipped; a resumed run hands the stored probes
        and re-measures on, so a drifted stored repeat may still be re-measured and a spent budget
        stays spent."""
        from dnncost.measuring.interleave import (
            TimingJob,
            stored_wanting_remeasure,
            time_interleaved,
        )
        from dnncost.measuring.timing import StepOptions

        repeats, jobs = self.config.repeats, []
        per_repeat = repeat_seconds(self.config.step_budget_s)
        owner: dict[str, tuple[_Network, str]] = {}
        already: dict[str, StoredRepeats] = {}
        for net in networks:
            for mode in MODES:
                already[f"{net.name} {mode}"] = _stored_repeats(
                    self.store.timing_rows(net.nid, mode, world_size=1))
                owner[f"{net.name} {mode}"] = (net, mode)
        again = set(stored_wanting_remeasure(already, repeats=repeats))
        for name, stored in already.items():
            net, mode = owner[name]
            self.advance(min(stored.planned, repeats), done=True)
            self.progress.plan((Stage.TIME, net.name, mode),
                               max(repeats - stored.planned, 0) * per_repeat)  # what is left
            if net.failed or (stored.planned >= repeats and name not in again):
                continue
            if net.model is None:
                self._guarded(net, Stage.TIME, lambda n: setattr(n, "model", self._model(n)),
                              timed=False)  # the whole stage is timed around this
            model = net.model
            if net.failed or model is None:
                continue
            jobs.append(TimingJob(name, model, net.shape, StepOptions(
                batch_size=self.config.batch_size, mode=Mode(mode), device=self.config.device,
                threads=self.threads, warmup=self.config.warmup, steps=self.config.steps,
                budget_s=self.config.step_budget_s,
                optimizer=OptimizerKind(self.config.optimizer), lr=self._recipe(net).lr)))

        ran: dict[str, int] = {}

        def store(name: str, index: int, timing: StepTiming) -> None:
            net, mode = owner[name]
            ran[name] = ran.get(name, 0) + 1
            self.progress.reach((Stage.TIME, net.name, mode), ran[name] * per_repeat)
            m = timing.measurement
            self.store.add_timing(net.nid, self.run_uid, TimingRow(
                mode=mode, samples=m.samples, median_s=m.median, iqr_s=m.iqr, threads=timing.threads,
                peak_memory_bytes=timing.peak_memory_bytes,
                conditions=_conditions(timing, remeasure=index >= repeats)))
            if index < repeats:
                self.advance(1, done=False)
            else:  # beyond the plan: not a unit of progress
                self.remeasured += 1

        def fail(name: str, exc: Exception) -> None:
            net, _ = owner[name]
            if not net.failed:
                net.failed = True
                self._fail(net.name, net.nid, Stage.TIME, exc)

        time_interleaved(jobs, repeats=repeats, already={j.name: already[j.name] for j in jobs},
                         on_repeat=store, on_error=fail)
        for net in networks:
            net.model = None  # timing done: free the memory
            for mode in ("train", "eval"):
                self.progress.finish((Stage.TIME, net.name, mode))

    def _breakdown(self, net: _Network) -> None:
        key = (Stage.BREAKDOWN, net.name, "")
        if self.store.has_breakdown(net.nid):
            self._mark(key, stored=True)
            return
        from dnncost.measuring.breakdown import profile_breakdown

        profiled = profile_breakdown(self._model(net), net.shape, batch_size=self.config.batch_size,
                                     mode=Mode.TRAIN, device=self.config.device, threads=self.threads,
                                     warmup=1, steps=BREAKDOWN_STEPS, optimizer=self.config.optimizer,
                                     lr=self._recipe(net).lr, name=net.loaded.name)
        counted = self.store.count_row(net.nid, Mode.TRAIN.value)
        flops = {t: int(c["flops"]) for t, c in (counted.by_layer_type if counted else {}).items()}
        rows = {r.name or "(model)": (r.total_s, flops.get(r.name, 0)) for r in profiled.by_module_type}
        for layer_type, f in flops.items():
            rows.setdefault(layer_type, (0.0, f))
        rows[BETWEEN_OPERATORS] = (max(profiled.gap_s, 0.0), 0)
        self.store.put_breakdown(net.nid, rows)
        self._mark(key, stored=False)

    def _recipe(self, net: _Network) -> Recipe:
        """The family's training recipe (dnncost.training.recipe), at the configured rate if set."""
        recipe = recipe_for(net.family)
        return recipe if self.config.lr is None else replace(recipe, lr=self.config.lr)

    def _plan_training(self, networks: Sequence[_Network]) -> None:
        """Plan each training run not yet stored again from its network's timed steps: the cap's
        training steps and validation passes, times the share of the cap a run to a target is
        expected to take (dnncost.study.progress)."""
        share = 1.0 if self.config.target_accuracy is None else TARGET_SHARE_OF_CAP
        for net in networks:
            if net.failed:
                continue
            steps = {mode: [r.median_s for r in self.store.timing_rows(net.nid, mode)]
                     for mode in ("train", "eval")}
            data = self._dataset(net.shape)
            cap = self._recipe(net).epochs(self.config.epochs)
            full = training_seconds(
                cap_epochs=cap,
                steps_per_epoch=math.ceil(len(data.train) / self.config.batch_size),  # type: ignore[arg-type]
                val_batches=math.ceil(len(data.val) / self.config.batch_size),  # type: ignore[arg-type]
                validations_per_epoch=self.config.effective_validations_per_epoch,
                train_step_s=statistics.median(steps["train"]) if steps["train"] else math.nan,
                eval_step_s=statistics.median(steps["eval"]) if steps["eval"] else math.nan)
            for seed in seeds(self.config):
                key = (Stage.TRAIN, net.name, seed_part(seed))
                self._cap_seconds[key] = full
                self.progress.plan(key, full * share)

    def _train(self, net: _Network) -> None:
        """Train the network from each seed not yet trained (dnncost.training.trainer.train):
        to the target accuracy with its family's recipe epochs as the cap, or for exactly those
        epochs without a target; each epoch, each validation and the time to the target stored
        as it comes."""
        cap = self._recipe(net).epochs(self.config.epochs)  # a family may train a multiple
        for seed in seeds(self.config):
            key = (Stage.TRAIN, net.name, seed_part(seed))
            if self.store.has_complete_training(net.nid, seed=seed):
                self._mark(key, stored=True)
                continue
            self._train_from(net, seed=seed, cap=cap, key=key)

    def _train_from(self, net: _Network, *, seed: int, cap: int, key: Key) -> None:
        from dnncost.training.trainer import TrainOptions, train

        data = self._dataset(net.shape)
        self.training_uid = uid = self.store.start_training(
            net.nid, self.run_uid, epochs_planned=cap, dataset=data.description, seed=seed)
        full = self._cap_seconds.get(key, cap * EPOCH_S)

        def on_validation(record: ValidationRecord) -> None:
            self.store.add_validation(uid, record)
            self.progress.reach(key, full * min(record.epochs / cap, 1.0))

        options = TrainOptions(
            epochs=cap, batch_size=self.config.batch_size, optimizer=OptimizerKind(self.config.optimizer),
            device=self.config.device, threads=self.threads, seed=seed,
            target_accuracy=self.config.target_accuracy,
            validations_per_epoch=self.config.effective_validations_per_epoch,
        ).with_recipe(self._recipe(net))
        result = train(self._model(net, seed=seed), data, options=options, progress=False,
                       name=net.loaded.name, on_validation=on_validation,
                       on_epoch=lambda record: self.store.add_epoch(uid, record))
        if result.time_to_target is not None:  # before 'complete': a complete run to a target has it
            self.store.put_time_to_target(uid, result.time_to_target)
        self.store.finish_training(uid, "complete")
        self.training_uid = None
        self.advance(1, done=False)
        self.progress.finish(key, worth=self.progress.credited.get(key, 0.0))  # early: the rest back

    def _data_parallel(self, net: _Network) -> None:
        """The training step on ``world_size`` DDP workers (same per-worker batch, the cores
        shared among the workers), stored with its all-reduce the moment it is measured."""
        world_size, backend = self.config.world_size, self.config.backend
        key = (Stage.DISTRIBUTED, net.name, "")
        if self.store.has_data_parallel(net.nid, world_size=world_size, backend=backend):
            self._mark(key, stored=True)
            return
        from dnncost.distributed.data_parallel import measure_distributed
        from dnncost.distributed.launch import GroupOptions

        timing = measure_distributed(
            net.name, net.shape, nproc=world_size, group=GroupOptions(backend), device=self.config.device,
            batch_size=self.config.batch_size, warmup=max(1, self.config.warmup),
            steps=max(self.config.steps, DDP_MIN_STEPS), optimizer=self.config.optimizer,
            port=self.port, name=net.loaded.name)
        self.store.add_data_parallel_timing(net.nid, self.run_uid, timing.as_record())
        self._mark(key, stored=False)

    def _whatif(self, net: _Network) -> None:
        """dnncost whatif on the training step (``steps`` interleaved pairs per transformation),
        each result stored as it finishes; a network with stored what-if results is skipped."""
        key = (Stage.WHATIF, net.name, "")
        if self.store.whatif_rows(net.nid):
            self._mark(key, stored=True)
            return
        from dnncost.measuring.timing import StepOptions
        from dnncost.study.whatif import study_whatif, whatif_row
        from dnncost.training.trainer import TrainOptions
        from dnncost.whatif.accuracy import TrainingOptions
        from dnncost.whatif.registry import parse_specs

        options = StepOptions(batch_size=self.config.batch_size, mode=Mode.TRAIN,
                              device=self.config.device, threads=self.threads,
                              warmup=self.config.warmup, steps=self.config.steps,
                              optimizer=OptimizerKind(self.config.optimizer), lr=self._recipe(net).lr)
        training = TrainingOptions(recipe=self._recipe(net), dataset=self.config.dataset,
                                   train=TrainOptions(
                                       epochs=self._recipe(net).epochs(self.config.epochs),
                                       batch_size=self.config.batch_size, device=self.config.device,
                                       threads=self.threads, seed=SEED)) \
            if self.config.whatif_train else None  # the study's recipe, data and epochs
        specs = parse_specs(None if self.config.whatif == "" else self.config.whatif)  # '': all
        for result in study_whatif(self._model(net), specs, options=options,
                                   input_shape=net.shape, name=net.loaded.name, training=training,
                                   data=self._dataset(net.shape) if training else None):
            self.store.add_whatif(net.nid, self.run_uid, whatif_row(result))
        self._mark(key, stored=False)

    def _work(self, net: _Network) -> None:
        """Cost vs work: the training step of a network named in WORK_PLAN timed over batch sizes
        and input sizes (dnncost.study.work), all points stored together."""
        key = (Stage.WORK, net.name, "")
        if self.store.has_work(net.nid):
            self._mark(key, stored=True)
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            points = measure_work(net.name, grid=work_grid(net.name),
                                  options=WORK_STEP.replace(
                                      device=self.config.device, threads=self.threads,
                                      optimizer=OptimizerKind(self.config.optimizer)))
        noisy = 0
        for w in caught:  # one line for the sweep's noisy points, not one per point
            if issubclass(w.category, NoisyMeasurementWarning):
                noisy += 1
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if noisy:
            warnings.warn(f"{net.name} cost vs work: {noisy} of {len(points)} points timed with "
                          f"an IQR above {NOISE_THRESHOLD:.0%} of the median; the machine may be "
                          "busy", NoisyMeasurementWarning, stacklevel=1)
        self.store.add_work(net.nid, self.run_uid, [
            WorkRow(mode=Mode.TRAIN.value, batch_size=p.batch_size, input_size=p.input_size, step_s=p.step_s,
                    flops=p.flops) for p in points])
        self._mark(key, stored=False)

    def _dataset(self, shape: tuple[int, ...]) -> DatasetSplit:
        """The dataset shaped for ``shape`` (cached per shape), cut to ``train_limit`` if set."""
        if shape not in self._datasets:
            self._datasets[shape] = load_study_dataset(self.config, shape)
        return self._datasets[shape]


__all__ = ["Stage", "StudySummary", "plan_units", "run_study"]
