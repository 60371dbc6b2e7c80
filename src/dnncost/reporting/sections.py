"""The report's sections, as blocks (dnncost.reporting.blocks), rendered from the study's findings
(dnncost.study.findings): per group of comparable results (one configuration on one machine) its
machine and configuration, the verdict, what explains the time, the tables of networks and fits,
the timing and the machine's drift, time-to-accuracy, the data-parallel communication, cost vs work,
predicted vs measured and where the study's own time went; then the what-if and unseen-network
sections of the whole store. A merged store gives one
section per group. Nothing here counts, predicts or fits: every number comes from the records.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from dnncost.core.kinds import MODES, Mode
from dnncost.measuring.measurement import (
    DRIFT_THRESHOLD,
    SHIFT_THRESHOLD,
    STUDY_ESTIMATOR,
    STUDY_ESTIMATOR_WHY,
)
from dnncost.reporting.blocks import (
    Block,
    Code,
    FigureBlock,
    Heading,
    Paragraph,
    Table,
    bytes_text,
    ci_text,
    num_text,
    pct_text,
)
from dnncost.reporting.formatting import human
from dnncost.study.analysis import StudyAnalysis
from dnncost.study.findings import Findings, GroupFindings, PredictedVsMeasured
from dnncost.study.points import MIN_POINTS, TimeMetric
from dnncost.study.stages import Stage, describe_split
from dnncost.study.store import Group
from dnncost.study.work import WorkSeries

NETWORK_COLUMNS = ("network", "family", "params", "forward FLOPs", "train-step FLOPs",
                   "train step (ms)", "val step (ms)", "train epoch (s)", "val epoch (s)",
                   "GFLOP/s (train)", "% of peak", "measured / line", "val accuracy")


def network_table(analysis: StudyAnalysis) -> Table:
    """The table of all networks, as the report prints it."""
    rows = []
    network_rows: list[dict[str, Any]] = analysis.network_rows()
    for r in sorted(network_rows, key=lambda r: r["train_flops"]):
        rows.append((
            str(r["network"]), str(r["family"]), human(r["params"]), human(r["eval_flops"]),
            human(r["train_flops"]), num_text(r["train_step_ms"]), num_text(r["eval_step_ms"]),
            num_text(r["train_epoch_s"]), num_text(r["val_epoch_s"]), num_text(r["train_gflops_per_s"]),
            pct_text(r["train_share_of_peak"]), num_text(r["residual"], 2),
            pct_text(r["val_accuracy"]) if r["val_accuracy"] is not None else "-"))
    return Table(NETWORK_COLUMNS, tuple(rows))


def fits_table(analysis: StudyAnalysis) -> Table:
    columns = ("time", "against", "n", "Pearson r [95% CI]", "p", "Spearman ρ [95% CI]", "p",
               "R² (line)", "log-log slope [95% CI]", "slope CI over repeats")
    rows = []
    for f in analysis.fits:
        rows.append((
            f.time_metric.label, f.time_metric.work_label(f.cost_metric), str(f.n),
            f"{num_text(f.pearson_r, 3)} {ci_text(*f.pearson_ci)}", num_text(f.pearson_p, 2),
            f"{num_text(f.spearman_rho, 3)} {ci_text(*f.spearman_ci)}", num_text(f.spearman_p, 2),
            num_text(f.r_squared, 3), f"{num_text(f.loglog_slope, 3)} {ci_text(*f.loglog_slope_ci)}",
            ci_text(*f.repeat_slope_ci)))
    return Table(columns, tuple(rows))


DATA_PARALLEL_COLUMNS = ("network", "family", "params", "train-step FLOPs / worker", "gradients",
                         "all-reduced / step", "step (ms)", "all-reduce (ms)", "comm share",
                         "1 process (ms)", "efficiency")


def data_parallel_table(analysis: StudyAnalysis) -> Table:
    """Communication share of each network's data-parallel training step, fewest params first."""
    dp = analysis.data_parallel
    rows = tuple((
        r.name, r.family, human(r.params), human(r.train_flops), bytes_text(r.gradient_bytes),
        bytes_text(r.allreduce_bytes), num_text(r.step_s * 1e3), num_text(r.allreduce_s * 1e3),
        pct_text(r.comm_share),
        num_text(r.single_process_s * 1e3) if r.single_process_s is not None else "-",
        num_text(r.efficiency, 2)) for r in (dp.rows if dp else ()))
    return Table(DATA_PARALLEL_COLUMNS, rows)


def data_parallel_blocks(analysis: StudyAnalysis, *, prefix: str = "") -> list[Block]:
    """The data-parallel section (empty when the group holds no data-parallel results)."""
    from dnncost.reporting import plots

    dp = analysis.data_parallel
    if dp is None:
        return []
    first = dp.rows[0]

    def rank(k) -> str:
        if not math.isfinite(k.rho):
            return f"not defined (n = {k.n}; it needs 3 networks with differing values)"
        interval = f"95% interval {ci_text(*k.ci)}, " if all(map(math.isfinite, k.ci)) else ""
        p = "p < 0.0001" if k.p < 1e-4 else f"p = {k.p:.2g}"
        return f"{k.rho:.2f} ({interval}{p}, n = {k.n})"

    return [
        Heading("Data-parallel training: communication share vs parameters, beside FLOPs", 3),
        Paragraph(f"Each network's training step on {first.world_size} {first.backend} workers "
                  f"(torch.distributed + DistributedDataParallel), batch {first.batch_size} and "
                  f"{first.threads} thread(s) per worker. 'all-reduce' is the median time per step "
                  "with a gradient all-reduce in flight (DDP communication hook; overlap with the "
                  "backward pass and waiting for a slower worker included); 'comm share' = "
                  "all-reduce / step (slowest worker's median step); 'all-reduced / step' is what "
                  "each worker hands to all-reduce (the trainable gradients); 'efficiency' = one "
                  "plain process's step / the data-parallel step at the same per-worker batch and "
                  "threads (weak scaling, 1.0 = no slow-down)."),
        Paragraph(f"Spearman ρ of the communication share against parameters: {rank(dp.vs_params)}; "
                  f"against training-step FLOPs: {rank(dp.vs_flops)}."),
        data_parallel_table(analysis),
        FigureBlock(prefix + "comm_share_vs_params.png", plots.png_bytes(plots.comm_share(analysis)),
                    "Data-parallel communication share against parameters (left) and training-step "
                    "FLOPs per worker (right), log x."),
    ]


def _describe(group: Group) -> str:
    """Machine and configuration of a group, in one paragraph."""
    env, cfg = group.environment, group.config
    peak = (f"calibrated peak {group.peak_flops_per_s / 1e9:.1f} GFLOP/s (float32, the faster of "
            f"the matmul and 3x3 convolution benchmarks; {group.calibration})"
            if group.peak_flops_per_s else "no calibrated peak")
    steps = (f"timed steps filling {cfg.get('step_budget_s')} s (at least 6)"
             if cfg.get("step_budget_s") else f"{cfg.get('steps')} timed steps")
    target = cfg.get("target_accuracy")
    training = (f"trained until the validation accuracy first reaches {target:g} (validated "
                f"{_times(cfg.get('validations_per_epoch'))} an epoch), capped at {cfg.get('epochs')} "
                "epoch(s) times the family's recipe multiple" if isinstance(target, float) else
                f"{cfg.get('epochs')} epoch(s) of real training (fixed epochs)")
    return (f"Machine: {env.get('cpu_model', '?')}, {env.get('cpu_cores', '?')} cores, "
            f"{env.get('threads', '?')} threads, device "
            f"{env.get('device_name', env.get('device', '?'))}; torch {env.get('torch_version', '?')} "
            f"({env.get('torch_build', '?')}), dnncost {env.get('dnncost_version', '?')} at "
            f"{env.get('git_revision', '?')}; {peak}. Configuration {group.config_hash}: dataset "
            f"{cfg.get('dataset')}, input size {cfg.get('input_size') or 'of each network'}, batch "
            f"size {cfg.get('batch_size')}, {training}; each "
            f"repeat of a step timing is {steps} after {cfg.get('warmup')} warm-up steps; optimizer "
            f"{cfg.get('optimizer')} (lr {cfg.get('lr')}), device {cfg.get('device')}, world size "
            f"{cfg.get('world_size', 1)}.")


EXPLAIN_COLUMNS = ("measures", "R² (in sample)", "R² leave-one-network-out [95% CI]",
                   "median held-out error", "worst held-out error", "fixed cost (ms)")


def explanation_blocks(analysis: StudyAnalysis, *, prefix: str = "") -> list[Block]:
    """What explains the time: each measure alone and all together (cross-validated), the
    variance shares, the lines inside families; every sentence generated from the numbers."""
    from dnncost.reporting import plots

    expl = analysis.explanation
    if expl is None:
        return []
    rows = tuple((m.label, num_text(m.r_squared, 3),
                  f"{num_text(m.cv_r_squared, 3)} {ci_text(*m.cv_r_squared_ci)}", pct_text(m.median_error),
                  pct_text(m.worst_error), num_text(m.intercept_s * 1e3)) for m in expl.models)
    return [Heading("What explains the time: several measures together", 3),
            *[Paragraph(c) for c in analysis.claims],
            Table(EXPLAIN_COLUMNS, rows),
            Paragraph("Method: time = fixed + sum of (cost per unit x measure) with every term >= 0 "
                      "(non-negative least squares, in seconds). Cross-validated R²: each network "
                      "predicted by the fit on the others; its interval resamples the networks' "
                      "(time, held-out prediction) pairs. Shares: Shapley (LMG) decomposition of the "
                      "joint R² over every order of adding the measures, interval over resampled "
                      "networks; 'unique' is the R² lost when the measure is dropped."),
            FigureBlock(prefix + "explained_variance.png", plots.png_bytes(plots.explanation(expl)),
                        "Left: R² of step time predicted from each measure and all together, "
                        "leave-one-network-out. Right: each measure's share of the variance."),
            FigureBlock(prefix + "within_families.png",
                        plots.png_bytes(plots.within_families(analysis)),
                        "Time against FLOPs inside each family (joined) and across families.")]


WORK_COLUMNS = ("network", "batch", "input", "FLOPs", "step (ms)", "ms / sample", "GFLOP/s",
                "fixed share", "local slope")


def work_blocks(series: Sequence[WorkSeries], *, prefix: str = "") -> list[Block]:
    """Cost vs work: one sentence per series, the table of every step, the figure."""
    from dnncost.reporting import plots

    if not series:
        return []
    rows = tuple((str(r["network"]), str(r["batch_size"]), str(r["input_size"]), human(r["flops"]),
                  num_text(r["step_ms"]), num_text(r["ms_per_sample"]), num_text(r["gflops_per_s"]),
                  pct_text(r["fixed_share"]), num_text(r["local_slope"], 2))
                 for s in series for r in s.rows())
    return [Heading("Cost vs work: one network, more samples or more pixels", 3),
            *[Paragraph(s.summary) for s in series],
            Table(WORK_COLUMNS, rows),
            FigureBlock(prefix + "cost_vs_work.png", plots.png_bytes(plots.cost_vs_work(list(series))),
                        "Step time and achieved speed against the step's FLOPs as batch size "
                        "(solid) and input size (dashed) grow.")]


def group_blocks(found: GroupFindings, *, prefix: str = "") -> list[Block]:
    """The report section of one group of comparable results."""
    from dnncost.counting.conventions import CONVENTION
    from dnncost.reporting import plots

    group, analysis = found.group, found.analysis
    blocks: list[Block] = [Paragraph(_describe(group))]
    if found.command:
        blocks += [Paragraph("Produced by:"), Code(found.command)]
    blocks += [Heading("Verdict: is time linear in computation here?", 3),
               Paragraph(analysis.verdict.headline, emphasis=True)]
    blocks += [Paragraph(r) for r in analysis.verdict.reasons]
    blocks += explanation_blocks(analysis, prefix=prefix)
    if group.config.get("lr", 0.0) is None:  # trained with dnncost.training.recipe
        from dnncost.training.recipe import describe_recipes

        blocks.append(Paragraph(describe_recipes()))
    figures = [
        ("time_vs_flops_train_step.png", plots.time_vs_flops(analysis, TimeMetric.TRAIN_STEP),
         "Training-step time against training-step FLOPs (log-log). Error bars: 95% bootstrap "
         "interval over repeats of the study's estimator."),
        ("time_vs_flops_eval_step.png", plots.time_vs_flops(analysis, TimeMetric.EVAL_STEP),
         "Validation-step time against forward FLOPs (log-log)."),
        ("achieved_gflops.png", plots.achieved_gflops(analysis),
         "Achieved GFLOP/s per network, training and validation step, against the calibrated peak."),
        ("layer_type_shares.png", plots.layer_type_shares(analysis),
         "Share of training-step time vs share of FLOPs by layer type (torch.profiler breakdown)."),
        ("train_vs_val.png", plots.train_vs_val(analysis),
         "Training vs validation time per epoch of real training."),
    ]
    blocks.append(FigureBlock(prefix + figures[0][0], plots.png_bytes(figures[0][1]), figures[0][2]))
    blocks += [Heading("All networks", 3),
               Paragraph("FLOPs are per step at the study's batch size (forward: one validation step; "
                         "train-step: forward + loss + backward + optimizer). 'measured / line' is the "
                         "training-step time divided by the least-squares line's prediction from FLOPs. "
                         "'train epoch' is the median epoch of the study's training run, each scaled "
                         "to the whole training set (a run stopped at its target ends in part of an "
                         "epoch); 'val epoch' is one pass over the validation split; 'val accuracy' "
                         "is the validation accuracy at the end of the run (for a run to a target, at "
                         "the validation that reached it)."),
               network_table(analysis)]
    if analysis.skipped:
        blocks.append(Paragraph("Left out: " + "; ".join(f"{k} ({v})" for k, v in analysis.skipped.items())))
    blocks += timing_blocks(found, prefix=prefix)
    blocks += time_to_accuracy_blocks(found, prefix=prefix)
    blocks.append(Heading("Figures", 3))
    blocks += [FigureBlock(prefix + name, plots.png_bytes(fig), caption)
               for name, fig, caption in figures[1:]]
    blocks += data_parallel_blocks(analysis, prefix=prefix)
    blocks += work_blocks(found.work, prefix=prefix)
    blocks += prediction_blocks(found.predicted, prefix=prefix)
    blocks += [Heading("Every time against every measure of computation", 3), fits_table(analysis),
               Paragraph("Intervals: Pearson by Fisher's z (scipy); Spearman by Fisher's z with the "
                         "Fieller-Hartley-Pearson variance; log-log slope by the regression's t interval "
                         "across networks, and by a bootstrap over each network's repeated measurements "
                         "(its repeats drawn with replacement, its time recomputed by the study's "
                         "estimator; for time-to-accuracy its seeds, with their median). "
                         "Time-to-accuracy is set against each measure of the steps to the target "
                         "(one step's measure times the steps) and against the FLOPs of one step."),
               Paragraph(CONVENTION)]
    return blocks + stage_blocks(found)


TARGET_COLUMNS = ("network", "FLOPs / step", "steps to target", "epochs to target", "FLOPs to target",
                  "train (s)", "validation (s)", "total (s)", "reached?", "val accuracy")


def target_table(analysis: StudyAnalysis) -> Table:
    """Per network its run to the target: work and time, fastest first."""
    tta = analysis.time_to_accuracy
    rows = tuple((
        r.name, human(r.flops_per_step), str(r.steps), num_text(r.epochs, 3), human(r.flops_to_target),
        num_text(r.train_s), num_text(r.val_s), num_text(r.total_s),
        "yes" if r.reached else f"no (cap {_epochs(r.max_epochs)})", pct_text(r.val_accuracy))
        for r in (tta.rows if tta else ()))
    return Table(TARGET_COLUMNS, rows)


def _epochs(n: int) -> str:
    return "1 epoch" if n == 1 else f"{n} epochs"


def _times(k: object) -> str:
    """'once', 'twice', '4 times'."""
    return {1: "once", 2: "twice"}.get(k, f"{k} times") if isinstance(k, int) else f"{k} times"


SEEDS_COMMAND = "python benchmarks/tta_seeds.py"  # how to measure what the seeds do, when not stored


def time_to_accuracy_blocks(found: GroupFindings, *, prefix: str = "") -> list[Block]:
    """Time-to-accuracy: the protocol, the verdicts against FLOPs to the target and FLOPs per
    step, the rankings, the table, the figure and what the seeds do (or how to measure it)."""
    from dnncost.reporting import plots

    analysis, cfg = found.analysis, found.group.config
    tta = analysis.time_to_accuracy
    if tta is None:
        if cfg.get("epochs"):
            return [Heading("Time-to-accuracy", 3), Paragraph(
                "This study trained every network for a fixed number of epochs (the paper's "
                "protocol), so it has no time to a target accuracy; without --fixed-epochs the study "
                "trains each network until its validation accuracy reaches the target.")]
        return []
    target, k = tta.rows[0].target_accuracy, tta.rows[0].validations_per_epoch
    reached = [r for r in tta.rows if r.reached]
    missed = [r for r in tta.rows if not r.reached]
    blocks: list[Block] = [
        Heading("Time-to-accuracy: the time to a usable model, beside FLOPs and step time", 3),
        Paragraph(f"Each network trained until its validation accuracy first reached "
                  f"{target:g}, validating {_times(k)} an epoch on the whole validation split, so "
                  f"the crossing is placed to within {'an epoch' if k == 1 else f'1/{k} of an epoch'}; "
                  "the cap "
                  "is its family's recipe epochs (the learning-rate schedule is planned over the cap, "
                  "so a run that reaches the target early stops part-way down its cosine). The time "
                  "to the target counts training and validation together (as MLPerf Training and "
                  "DAWNBench do), with each apart in the table; the FLOPs to the target are the "
                  "training step's FLOPs times the steps to the target (the validation passes' FLOPs "
                  "are not in them, their time is)."),
        Paragraph(f"{len(reached)} of {len(tta.rows)} networks reached the target"
                  + (f"; {', '.join(r.name for r in missed)} did not within the cap (their figures "
                     "are lower bounds and they are left out of the fits and rankings)" if missed
                     else "") + "."),
    ]
    if len(reached) >= MIN_POINTS:
        blocks += [Paragraph(tta.to_target.headline, emphasis=True),
                   *[Paragraph(r) for r in tta.to_target.reasons],
                   Paragraph(f"Against the FLOPs of one step: {tta.per_step.headline} "
                             + " ".join(tta.per_step.reasons[:2]))]
    else:
        blocks.append(Paragraph(f"Fewer than {MIN_POINTS} networks reached the target: no fit or "
                                "ranking of time-to-accuracy."))
    blocks += [Paragraph(c) for c in tta.claims]
    if not tta.spreads:
        blocks.append(Paragraph(
            "How much the seed moves time-to-accuracy: this study trained each network from one "
            "seed, so its times carry no interval over seeds and it cannot say. Measure it with "
            f"`{SEEDS_COMMAND}` (every network of the study from several seeds, as the study trains "
            "it, with the spread of the time and steps to the target and whether the ranking "
            "holds), or rerun the study's command with --seeds N (it resumes and trains only the "
            "seeds it lacks; the report then states the spread)."))
    blocks += [target_table(analysis),
               FigureBlock(prefix + "time_to_accuracy.png", plots.png_bytes(plots.time_to_accuracy(analysis)),
                           f"Time to {target:g} validation "
                           "accuracy against the FLOPs of one training step (left) and the FLOPs to "
                           "the target (right), log-log, with the power-law fit and the least-squares "
                           "line; hollow triangles: did not reach the target within the cap (lower "
                           "bounds).")]
    return blocks


STAGE_COLUMNS = ("stage", "wall time (s)", "share")


def stage_blocks(found: GroupFindings) -> list[Block]:
    """Where the study's own time went: the wall time its runs spent in each stage (empty for a
    store from before stages were recorded)."""
    seconds = found.stage_seconds
    if not seconds:
        return []
    total = sum(seconds.values())
    order = {st.value: i for i, st in enumerate(Stage)}
    rows = tuple((Stage(name).label if name in order else name, f"{s:.1f}", pct_text(s / total))
                 for name, s in sorted(seconds.items(), key=lambda kv: order.get(kv[0], len(order))))
    runs = f"{found.runs} runs (resumed ones included)" if found.runs > 1 else "its run"
    return [Heading("Where the study's time went", 3),
            Paragraph(f"Wall time of {runs} by stage, writing this report aside: "
                      f"{describe_split(seconds)}."),
            Table(STAGE_COLUMNS, rows)]


def _shift_sentence(shift: float, record_s: float | None) -> str:
    """The run's quiet level against the machine's best on record: a whole-run shift or not."""
    if record_s is None or not math.isfinite(shift):
        return ""
    verdict = (f"beyond {SHIFT_THRESHOLD:.0%}: the whole run may be slower than this machine's "
               "best, so compare its times with other runs' only as ratios"
               if shift > SHIFT_THRESHOLD else f"within {SHIFT_THRESHOLD:.0%}: no whole-run shift")
    return (f"That quiet level was {shift:+.0%} against the fastest probe on record for this "
            f"machine ({record_s * 1e3:.2f} ms), {verdict}.")


FEW_REPEATS = 3  # source: our choice; a bootstrap over 1 or 2 repeats has almost no spread to show


def timing_blocks(found: GroupFindings, *, prefix: str = "") -> list[Block]:
    """How the step times were read and how the machine behaved while they were taken: the
    estimator and why, the log-log slope's interval over repeats, the reference probe over the
    study (median and largest drift, flagged and re-measured repeats, a figure), and a warning
    when the machine was busy or slowed for most of the run."""
    from dnncost.reporting import plots

    analysis, drift = found.analysis, found.drift
    blocks: list[Block] = [
        Heading("Timing: the estimator, and the machine over the run", 3),
        Paragraph(f"Step times are the {STUDY_ESTIMATOR.value} estimate: {STUDY_ESTIMATOR_WHY}. "
                  "Each repeat is its own warm-up and timed steps, taken round-robin over the "
                  "networks; repeats whose reference probe ran more than "
                  f"{DRIFT_THRESHOLD:.0%} slower than the run's quiet level (the lower quartile "
                  "of its probes) are left out (all are "
                  "kept when every one was). The intervals over repeats draw each network's repeats "
                  "with replacement and apply the same estimator.")]
    f = analysis.fit(TimeMetric.TRAIN_STEP)
    if f is not None:
        low, high = f.repeat_slope_ci
        blocks.append(Paragraph(
            f"Training-step time against FLOPs: log-log slope {f.loglog_slope:.3f}, 95% interval "
            f"over repeats {ci_text(low, high, 3)} (width {num_text(high - low, 2)}); across networks "
            f"{ci_text(*f.loglog_slope_ci, digits=3)}."))
    probed = drift.probed
    if not probed:
        return blocks + [Paragraph("These repeats were stored without the reference probe and the "
                                   "machine's load (a study from before schema 7): there is no "
                                   "drift over the run to show.")]
    ref = f"{drift.reference_s * 1e3:.2f} ms" if drift.reference_s else "unknown"
    blocks.append(Paragraph(
        f"The reference probe around each repeat ({len(probed)} of {len(drift.points)} repeats "
        f"probed) ran a median {drift.median_drift:+.0%} (at most {drift.max_drift:+.0%}) against "
        f"the run's quiet level ({ref}); {drift.flagged} repeats drifted "
        f"beyond {DRIFT_THRESHOLD:.0%} and were flagged, and {drift.remeasured} were re-measured "
        f"within the budget. {_shift_sentence(drift.shift, drift.record_s)}"))
    few = [p.name for p in analysis.points
           if 0 < len(p.times.get(TimeMetric.TRAIN_STEP, ())) < FEW_REPEATS]
    if few:
        blocks.append(Paragraph(
            f"The training-step time of {len(few)} network(s) ({', '.join(few)}) rests on fewer than "
            f"{FEW_REPEATS} repeats whose probe stayed within the threshold; their intervals over "
            "repeats cannot show the repeat-to-repeat noise and understate it."))
    busy, slowed = drift.busy, drift.flagged > len(probed) / 2
    shifted = drift.shift > SHIFT_THRESHOLD
    if busy or slowed or shifted:
        why = []
        if busy:
            why.append(f"the machine was busy during {len(busy)} of {len(drift.points)} timed "
                       f"repeats (e.g. {'; '.join(busy[0].reasons)})")
        if slowed:
            why.append(f"the probe ran slow during most repeats ({drift.flagged} of {len(probed)})")
        if shifted:
            why.append(f"the whole run ran {drift.shift:+.0%} against the fastest probe on record")
        blocks.append(Paragraph(f"Warning: {' and '.join(why)}. These step times may be slower "
                                "than this machine's best; rerun the study on a quieter machine "
                                "to confirm them.", emphasis=True))
    blocks.append(FigureBlock(prefix + "machine_drift.png", plots.png_bytes(plots.machine_drift(drift)),
                              "The reference probe's speed at every timed repeat over the study "
                              "(the run's quiet level = 1): below the dashed line a repeat was "
                              "flagged; ringed: a re-measure; crossed: the machine was busy."))
    return blocks


def prediction_blocks(predicted: PredictedVsMeasured, *, prefix: str = "") -> list[Block]:
    """Predicted vs measured step time (leave-one-family-out) of the predictions the study stored
    with the per-operator time model of the machine that measured the group; else the line saying
    how to get them."""
    from dnncost.reporting import plots

    blocks: list[Block] = [Heading("Predicting step time from structure", 3)]
    ev = predicted.evaluation
    if ev is None:
        return blocks + [Paragraph(predicted.note)]
    rows = ev.table_rows()
    columns = tuple(rows[0].keys()) if rows else ()
    blocks += [*(Paragraph(ev.headline(mode)) for mode in MODES),
               *((Paragraph(predicted.calibration),) if predicted.calibration else ()),
               Table(columns, tuple(tuple(num_text(r[c]) for c in columns) for r in rows)),
               FigureBlock(prefix + "predicted_vs_measured.png",
                           plots.png_bytes(plots.predicted_vs_measured(ev)),
                           "Predicted against measured step time, leave-one-family-out: "
                           "the per-operator model beside the FLOPs-only line.")]
    return blocks


def report_blocks(findings: Findings) -> list[Block]:
    """The whole report: one section per group of comparable results, then the what-if and
    unseen-network sections."""
    blocks: list[Block] = [Heading("dnncost study: time against computation", 1)]
    groups = findings.groups
    if not groups:
        blocks.append(Paragraph("The store holds no results yet: run `dnncost study`."))
    for i, found in enumerate(groups):
        if len(groups) > 1:
            blocks.append(Heading(f"{i + 1}. {found.group.environment.get('cpu_model', '?')} - "
                                  f"configuration {found.group.config_hash}", 2))
        blocks += group_blocks(found, prefix=f"{i + 1}_" if len(groups) > 1 else "")
    return blocks + whatif_blocks(findings) + unseen_blocks(findings)


def whatif_blocks(findings: Findings) -> list[Block]:
    """'Does cutting FLOPs cut time?': each network's stored ``dnncost whatif`` results, a table and
    the FLOPs-saved-vs-time-saved figure (empty when the store holds none)."""
    from dnncost.reporting import plots
    from dnncost.reporting.whatif import flops_vs_time

    if not findings.whatif:
        return []
    blocks: list[Block] = [Heading("Does cutting FLOPs cut time? (dnncost whatif)", 2), Paragraph(
        "Each technique applied to the network, counted, and timed interleaved with the unmodified "
        "network (A B, B A, ...). Ratios are transformed / original per sample; time is the median "
        "of the per-pair ratios with its 95% interval.")]
    columns = ("transformation", "mode", "flops", "nominal_flops", "params", "time", "time_ci95",
               "note")
    for i, (network, results) in enumerate((w.network, w.results) for w in findings.whatif):
        trained = [r.original_accuracy for r in results if r.original_accuracy is not None]
        rows = []
        for r in results:
            row = r.to_row()
            rows.append((r.transformation, r.mode.value, num_text(row["flops"]),
                         num_text(row["nominal_flops"]), num_text(row["params"]), num_text(row["time"]),
                         ci_text(*r.time_ratio_ci95), str(row["note"]))
                        + ((num_text(row["accuracy"]), num_text(row["accuracy_change"]),
                            r.accuracy_note or "-") if trained else ()))
        blocks += [Heading(network, 3)]
        if trained:  # dnncost whatif --train (dnncost.whatif.accuracy)
            blocks.append(Paragraph(
                f"Trained with the study's recipe (whatif --train): the original reaches a "
                f"validation accuracy of {num_text(trained[0])}; accuracy_change is the transformed "
                "network's accuracy minus the original's."))
        blocks += [Table(columns + (("accuracy", "accuracy_change", "accuracy_note") if trained
                                    else ()), tuple(rows)),
                   FigureBlock(f"whatif_{i + 1}.png", plots.png_bytes(flops_vs_time(results,
                                                                                    title=network)),
                               f"{network}: FLOPs saved against time saved; the dashed line is "
                               "time proportional to FLOPs.")]
    if len(findings.whatif) > 1:
        everything = [r for w in findings.whatif for r in w.results]
        blocks.append(FigureBlock(
            "whatif_all.png", plots.png_bytes(flops_vs_time(everything, title="every network")),
            "Every network (colour) and technique (marker): which techniques turn FLOPs into time "
            "on this machine; the dashed line is time proportional to FLOPs."))
    return blocks


UNSEEN_COLUMNS = ("input", "step", "method", "n", "MAPE", "within ±10%", "Spearman ρ",
                  "error / per-kernel error", "too fast / too slow", "in its interval")
UNSEEN_LABELS = {"per_kernel": "per-kernel", "flops": "FLOPs-only", "params": "params-only",
                 "roofline": "roofline"}


def unseen_blocks(findings: Findings) -> list[Block]:
    """'Unseen networks': each stored ``dnncost evaluate --unseen`` protocol on each machine -- the
    machine, the calibration, the table per configuration, step and method, the run-to-run noise,
    what was left out, and the predicted-vs-measured figure; without results, the command to run."""
    from dnncost.reporting import plots
    from dnncost.study.unseen import COMMAND

    groups = findings.unseen
    blocks: list[Block] = [Heading("Unseen networks: step time predicted before training", 2)]
    if not groups:
        return blocks + [Paragraph(
            "The store holds no unseen-network results. Every torchvision classification network "
            "that is not in the zoo is timed and predicted (training and validation step, 3x32x32 at "
            "batch 32 and 3x224x224 at batch 8) by `dnncost calibrate --ops` followed by:"),
            Code(f"{COMMAND} --calibration stored --db {findings.path}"),
            Paragraph("(without --calibration it calibrates first; --quick for a smoke run); each "
                      "result is kept as it is measured and a rerun resumes. Then run "
                      "`dnncost report` again.")]
    blocks.append(Paragraph(
        "Networks the per-kernel model never saw: its calibration times random networks and its own "
        "hand-written transfer set only, never a torchvision, timm or zoo network. Baselines are "
        "one scale factor per mode fitted on the calibration's random networks, never on these: "
        "FLOPs-only, params-only, and a roofline "
        "(sum of max(FLOPs / peak, bytes / bandwidth)). 'error / per-kernel error' is the method's "
        "MAPE over the per-kernel model's; 'too fast / too slow' the shares of networks predicted "
        "below / above their measured time (an unbiased method splits them about evenly); 'in its "
        "interval' the share of networks measured inside the interval the per-kernel model stated "
        "with its prediction (its coverage, to be set against the interval's stated level)."))
    for i, group in enumerate(groups):
        env, cfg, result = group.environment, group.config, group.result
        cal = result.calibration
        held_out = cal.get("held_out")
        held = held_out if isinstance(held_out, dict) else {}
        modes = sorted(held, key=lambda m: (m != Mode.TRAIN.value, m))  # the training step first
        held_text = ", ".join(f"{m} {pct_text(held[m].get('mape'))}" for m in modes
                              if isinstance(held[m], dict)) or "not recorded"
        transfer = cal.get("transfer")
        moved = transfer if isinstance(transfer, dict) else {}
        transfer_text = ", ".join(f"{m} {pct_text(moved[m].get('mape'))}"
                                  for m in sorted(moved, key=lambda m: (m != Mode.TRAIN.value, m))
                                  if isinstance(moved[m], dict)) or "not recorded"
        level = result.interval_level()
        if len(groups) > 1:
            blocks.append(Heading(f"{i + 1}. {env.get('cpu_model', '?')} - protocol "
                                  f"{group.config_hash}", 3))
        blocks += [
            Paragraph(f"Machine: {env.get('cpu_model', '?')}, {env.get('cpu_cores', '?')} cores, "
                      f"{cfg.get('threads', env.get('threads', '?'))} threads, device "
                      f"{env.get('device_name', env.get('device', '?'))}; torch "
                      f"{env.get('torch_version', '?')}, dnncost {env.get('dnncost_version', '?')} "
                      f"at {env.get('git_revision', '?')}. Measured = {cfg.get('estimator', '?')} over "
                      f"{cfg.get('rounds', '?')} round-robin round(s) of {cfg.get('repeats', '?')} "
                      f"timed steps after {cfg.get('warmup', '?')} warm-up steps; networks above "
                      f"{num_text(cfg.get('max_step_gflops'))} GFLOPs a step left out."),
            Paragraph(f"Calibration {cfg.get('calibration_id', '?')}: "
                      f"{'a QUICK (rough) one, ' if cal.get('quick') else ''}"
                      f"{cal.get('networks', '?')} random networks, {cal.get('kernels', '?')} timed "
                      f"kernels, torch {cal.get('torch_version') or '?'}, {cal.get('threads', '?')} "
                      f"threads; held-out MAPE on random networks it did not fit: {held_text}; on "
                      f"its transfer set of standard networks it never fitted: {transfer_text}"
                      + ("" if cal.get("fingerprint") == group.fingerprint else
                         "; fitted on another machine than the one timed here")
                      + (f"; intervals stated at {level:.0%} coverage" if level is not None else
                         "; no intervals stated (a calibration from before them)") + "."),
            Paragraph("Produced by:"), Code("\n".join(group.commands) or COMMAND)]
        rows = result.rows()
        blocks.append(Table(UNSEEN_COLUMNS, tuple(
            (str(r["input"]), str(r["step"]), UNSEEN_LABELS.get(str(r["method"]), str(r["method"])),
             str(r["n"]), f"{num_text(r['mape_pct'])}%", f"{num_text(r['within_10pct'])}%",
             num_text(r["spearman"], 2), num_text(r["x_per_kernel_error"], 2),
             f"{num_text(r['too_fast_pct'])}% / {num_text(r['too_slow_pct'])}%",
             f"{num_text(r['coverage_pct'])}%" if num_text(r["coverage_pct"]) != "-" else "-")
            for r in rows)))
        noise = result.noise()
        if any(math.isfinite(v) for v in noise.values()):
            blocks.append(Paragraph("Run-to-run noise (median over networks of the spread of the "
                                    "round medians): " + ", ".join(
                                        f"{k} {pct_text(v)}" for k, v in noise.items()) + "."))
        speed = result.speed_change()
        if any(math.isfinite(v) for v in speed.values()):
            blocks.append(Paragraph(
                "Machine speed against the calibration's (the reference probe after each "
                "network's rounds, median; positive: slower than while calibrated, every step then "
                "likely slower than predicted): " + ", ".join(
                    f"{k} {v:+.0%}" if math.isfinite(v) else f"{k} not recorded"
                    for k, v in speed.items()) + "."))
        levels = result.levels()
        if levels:
            blocks.append(Paragraph(
                "Every method's predictions scaled by the machine's level ("
                + ("measured alongside: the calibration's held-out and transfer networks timed "
                   "again first in every round" if cfg.get("recheck") else
                   "the calibration's last recheck")
                + "; time now / time at calibration, median): "
                + ", ".join(f"{k} x{v:.3f}" for k, v in levels.items()) + "."))
        if result.skipped:
            blocks.append(Paragraph("Left out: " + "; ".join(
                f"{k} ({v})" for k, v in result.skipped.items()) + "."))
        blocks.append(FigureBlock(
            f"unseen_{i + 1}.png" if len(groups) > 1 else "unseen.png",
            plots.png_bytes(plots.unseen_predicted_vs_measured(result)),
            "Predicted against measured step time of networks the predictor never saw, per input "
            "configuration and step; grey band: within ±10%."))
    return blocks


__all__ = ["data_parallel_blocks", "data_parallel_table", "explanation_blocks", "fits_table", "group_blocks",
           "network_table", "prediction_blocks", "report_blocks", "stage_blocks", "target_table",
           "time_to_accuracy_blocks", "timing_blocks", "unseen_blocks", "whatif_blocks", "work_blocks"]
