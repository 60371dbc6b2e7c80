"""The study's report: Markdown, one self-contained HTML file, CSV and JSON, from a results store.

The report is built once as a list of blocks (headings, paragraphs, tables, figures) and rendered
twice: to Markdown (figures as PNG files beside it) and to HTML (figures embedded as base64 PNG,
every piece of text escaped with :func:`html.escape`, no scripts, no external resources), so the two
always say the same thing. Results are analysed per group of comparable results (one configuration
on one machine); a merged store gives one section per group.
"""
from __future__ import annotations

import base64
import html
import math
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dnncost.core.errors import OutputError
from dnncost.measuring.measurement import (
    DRIFT_THRESHOLD,
    SHIFT_THRESHOLD,
    STUDY_ESTIMATOR,
    STUDY_ESTIMATOR_WHY,
)
from dnncost.reporting.formatting import human, render_csv, render_json
from dnncost.study.analysis import StudyAnalysis, TimeMetric, analyze
from dnncost.study.drift import StudyDrift, study_drift
from dnncost.study.store import Group, Store
from dnncost.study.work import WorkPoint, WorkSeries, cost_vs_work

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
figure{margin:1.5em 0}figcaption{font-size:13px;color:#555}img{max-width:100%}
.verdict{border-left:4px solid #444;padding:.3em 1em;background:#fafafa}
pre{white-space:pre-wrap;font-size:12px;background:#f6f6f6;padding:.6em}
"""  # source: our choice, a plain readable page


# -- blocks -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str
    emphasis: bool = False


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class FigureBlock:
    filename: str
    png: bytes
    caption: str


@dataclass(frozen=True)
class Code:
    text: str


Block = Heading | Paragraph | Table | FigureBlock | Code


@dataclass(frozen=True)
class ReportFiles:
    """Where the report was written."""

    folder: Path
    markdown: Path
    html: Path
    networks_csv: Path
    fits_csv: Path
    json: Path
    figures: tuple[Path, ...]
    verdicts: tuple[str, ...]  # each group's verdict headline
    data_parallel_csv: Path | None = None  # only when the store holds data-parallel results


# -- formatting numbers --------------------------------------------------------------------------------
def _num(value: object, digits: int = 3) -> str:
    """3 significant digits, without an exponent for the magnitudes a report shows (1,234 not
    1.23e+03); '-' for missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if not isinstance(value, float):
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"


def _ci(low: float, high: float, digits: int = 2) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "-"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def _pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


# -- the content ---------------------------------------------------------------------------------------
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
            human(r["train_flops"]), _num(r["train_step_ms"]), _num(r["eval_step_ms"]),
            _num(r["train_epoch_s"]), _num(r["val_epoch_s"]), _num(r["train_gflops_per_s"]),
            _pct(r["train_share_of_peak"]), _num(r["residual"], 2),
            _pct(r["val_accuracy"]) if r["val_accuracy"] is not None else "-"))
    return Table(NETWORK_COLUMNS, tuple(rows))


def fits_table(analysis: StudyAnalysis) -> Table:
    columns = ("time", "against", "n", "Pearson r [95% CI]", "p", "Spearman ρ [95% CI]", "p",
               "R² (line)", "log-log slope [95% CI]", "slope CI over repeats")
    rows = []
    for f in analysis.fits:
        rows.append((
            f.time_metric.label, f.cost_metric.label, str(f.n),
            f"{_num(f.pearson_r, 3)} {_ci(*f.pearson_ci)}", _num(f.pearson_p, 2),
            f"{_num(f.spearman_rho, 3)} {_ci(*f.spearman_ci)}", _num(f.spearman_p, 2),
            _num(f.r_squared, 3), f"{_num(f.loglog_slope, 3)} {_ci(*f.loglog_slope_ci)}",
            _ci(*f.repeat_slope_ci)))
    return Table(columns, tuple(rows))


DATA_PARALLEL_COLUMNS = ("network", "family", "params", "train-step FLOPs / worker", "gradients",
                         "all-reduced / step", "step (ms)", "all-reduce (ms)", "comm share",
                         "1 process (ms)", "efficiency")


def _bytes(value: int) -> str:
    """Bytes with a unit: '648 B', '1.08 MB'."""
    text = human(value)
    return f"{text}B" if text[-1].isalpha() else f"{text} B"


def data_parallel_table(analysis: StudyAnalysis) -> Table:
    """Communication share of each network's data-parallel training step, fewest params first."""
    dp = analysis.data_parallel
    rows = tuple((
        r.name, r.family, human(r.params), human(r.train_flops), _bytes(r.gradient_bytes),
        _bytes(r.allreduce_bytes), _num(r.step_s * 1e3), _num(r.allreduce_s * 1e3),
        _pct(r.comm_share),
        _num(r.single_process_s * 1e3) if r.single_process_s is not None else "-",
        _num(r.efficiency, 2)) for r in (dp.rows if dp else ()))
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
        interval = f"95% interval {_ci(*k.ci)}, " if all(map(math.isfinite, k.ci)) else ""
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
    return (f"Machine: {env.get('cpu_model', '?')}, {env.get('cpu_cores', '?')} cores, "
            f"{env.get('threads', '?')} threads, device "
            f"{env.get('device_name', env.get('device', '?'))}; torch {env.get('torch_version', '?')} "
            f"({env.get('torch_build', '?')}), dnncost {env.get('dnncost_version', '?')} at "
            f"{env.get('git_revision', '?')}; {peak}. Configuration {group.config_hash}: dataset "
            f"{cfg.get('dataset')}, input size {cfg.get('input_size') or 'of each network'}, batch "
            f"size {cfg.get('batch_size')}, {cfg.get('epochs')} epoch(s) of real training; each "
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
    rows = tuple((m.label, _num(m.r_squared, 3),
                  f"{_num(m.cv_r_squared, 3)} {_ci(*m.cv_r_squared_ci)}", _pct(m.median_error),
                  _pct(m.worst_error), _num(m.intercept_s * 1e3)) for m in expl.models)
    return [Heading("What explains the time: several measures together", 3),
            *[Paragraph(c) for c in expl.claims],
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
                  _num(r["step_ms"]), _num(r["ms_per_sample"]), _num(r["gflops_per_s"]),
                  _pct(r["fixed_share"]), _num(r["local_slope"], 2))
                 for s in series for r in s.rows())
    return [Heading("Cost vs work: one network, more samples or more pixels", 3),
            *[Paragraph(s.summary) for s in series],
            Table(WORK_COLUMNS, rows),
            FigureBlock(prefix + "cost_vs_work.png", plots.png_bytes(plots.cost_vs_work(list(series))),
                        "Step time and achieved speed against the step's FLOPs as batch size "
                        "(solid) and input size (dashed) grow.")]


def group_blocks(group: Group, analysis: StudyAnalysis, *, prefix: str = "",
                 command: str | None = None, work_points: Sequence[WorkPoint] = ()) -> list[Block]:
    """The report section of one group of comparable results (``work_points``: its cost-vs-work
    measurements, if the study took them)."""
    from dnncost.counting.conventions import CONVENTION
    from dnncost.reporting import plots

    blocks: list[Block] = [Paragraph(_describe(group))]
    if command:
        blocks += [Paragraph("Produced by:"), Code(command)]
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
                         "training-step time divided by the least-squares line's prediction from FLOPs."),
               network_table(analysis)]
    if analysis.skipped:
        blocks.append(Paragraph("Left out: " + "; ".join(f"{k} ({v})" for k, v in analysis.skipped.items())))
    blocks += timing_blocks(group, analysis, prefix=prefix)
    blocks.append(Heading("Figures", 3))
    blocks += [FigureBlock(prefix + name, plots.png_bytes(fig), caption)
               for name, fig, caption in figures[1:]]
    blocks += data_parallel_blocks(analysis, prefix=prefix)
    blocks += work_blocks(cost_vs_work(work_points), prefix=prefix)
    blocks += prediction_blocks(group, prefix=prefix)
    blocks += [Heading("Every time against every measure of computation", 3), fits_table(analysis),
               Paragraph("Intervals: Pearson by Fisher's z (scipy); Spearman by Fisher's z with the "
                         "Fieller-Hartley-Pearson variance; log-log slope by the regression's t interval "
                         "across networks, and by a bootstrap over each network's repeated measurements "
                         "(its repeats drawn with replacement, its time recomputed by the study's "
                         "estimator)."),
               Paragraph(CONVENTION)]
    return blocks


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


def timing_blocks(group: Group, analysis: StudyAnalysis, *, prefix: str = "") -> list[Block]:
    """How the step times were read and how the machine behaved while they were taken: the
    estimator and why, the log-log slope's interval over repeats, the reference probe over the
    study (median and largest drift, flagged and re-measured repeats, a figure), and a warning
    when the machine was busy or slowed for most of the run."""
    from dnncost.reporting import plots

    drift = machine_drift(group)
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
            f"over repeats {_ci(low, high, 3)} (width {_num(high - low, 2)}); across networks "
            f"{_ci(*f.loglog_slope_ci, digits=3)}."))
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


def machine_drift(group: Group) -> StudyDrift:
    """The reference probe and the machine's load over a group's step timings."""
    return study_drift(group.networks, cores=int(str(group.environment.get("cpu_cores") or 1)))


def prediction_blocks(group: Group, *, prefix: str = "") -> list[Block]:
    """Predicted vs measured step time (leave-one-family-out), with the per-operator time model
    the study stored for the machine that measured the group (whichever machine renders the
    report); else a line saying how to get one."""
    from dnncost.prediction.predict import OperatorModel
    from dnncost.reporting import plots
    from dnncost.study.predicted import evaluate_group

    blocks: list[Block] = [Heading("Predicting step time from structure", 3)]
    how = ("run `dnncost calibrate --ops` on the machine that measured these results, then rerun "
           "the study's command there (it resumes, and stores the model) and `dnncost report`.")
    if group.operator_model is None:
        return blocks + [Paragraph("The study stored no per-operator time model of its machine: "
                                   + how)]
    try:
        model = OperatorModel.from_dict(group.operator_model)
    except (KeyError, TypeError, ValueError, AttributeError, pickle.UnpicklingError) as exc:
        return blocks + [Paragraph(f"The per-operator time model stored with these results is "
                                   f"unreadable ({type(exc).__name__}: {exc}): " + how)]
    ev = evaluate_group(group, op_model=model, peak_flops_per_s=group.peak_flops_per_s)
    rows = ev.table_rows()
    columns = tuple(rows[0].keys()) if rows else ()
    blocks += [Paragraph(ev.headline("train")), Paragraph(ev.headline("eval")),
               Table(columns, tuple(tuple(_num(r[c]) for c in columns) for r in rows)),
               FigureBlock(prefix + "predicted_vs_measured.png",
                           plots.png_bytes(plots.predicted_vs_measured(ev)),
                           "Predicted against measured step time, leave-one-family-out: "
                           "the per-operator model beside the FLOPs-only line.")]
    return blocks


def report_blocks(store: Store) -> tuple[list[Block], list[tuple[Group, StudyAnalysis]]]:
    """The whole report: one section per group of comparable results."""
    groups = [g for g in store.groups() if not g.config.get("whatif")]  # whatif: own section
    blocks: list[Block] = [Heading("dnncost study: time against computation", 1)]
    if not groups:
        return blocks + [Paragraph("The store holds no results yet: run `dnncost study`.")] \
            + whatif_blocks(store) + unseen_blocks(store), []
    commands = {(r.config_hash, r.fingerprint): r.command for r in store.runs()}
    analysed = []
    for i, group in enumerate(groups):
        analysis = analyze(group.networks, peak_flops_per_s=group.peak_flops_per_s)
        analysed.append((group, analysis))
        if len(groups) > 1:
            blocks.append(Heading(f"{i + 1}. {group.environment.get('cpu_model', '?')} - "
                                  f"configuration {group.config_hash}", 2))
        work = [WorkPoint(name, row.batch_size, row.input_size, row.step_s, row.flops)
                for name, row in store.work_rows(group)]
        blocks += group_blocks(group, analysis, prefix=f"{i + 1}_" if len(groups) > 1 else "",
                               command=commands.get((group.config_hash, group.fingerprint)),
                               work_points=work)
    return blocks + whatif_blocks(store) + unseen_blocks(store), analysed


def whatif_blocks(store: Store) -> list[Block]:
    """'Does cutting FLOPs cut time?': each network's stored ``dnncost whatif`` results, a table and
    the FLOPs-saved-vs-time-saved figure (empty when the store holds none)."""
    from dnncost.reporting import plots
    from dnncost.reporting.whatif import flops_vs_time
    from dnncost.study.whatif import result_from_row

    by_network: dict[str, list] = {}
    for network, row in store.whatif_rows():
        by_network.setdefault(network, []).append(result_from_row(network, row))
    if not by_network:
        return []
    blocks: list[Block] = [Heading("Does cutting FLOPs cut time? (dnncost whatif)", 2), Paragraph(
        "Each technique applied to the network, counted, and timed interleaved with the unmodified "
        "network (A B, B A, ...). Ratios are transformed / original per sample; time is the median "
        "of the per-pair ratios with its 95% interval.")]
    columns = ("transformation", "mode", "flops", "nominal_flops", "params", "time", "time_ci95",
               "note")
    for i, (network, results) in enumerate(by_network.items()):
        trained = [r.original_accuracy for r in results if r.original_accuracy is not None]
        rows = []
        for r in results:
            row = r.to_row()
            rows.append((r.transformation, r.mode.value, _num(row["flops"]),
                         _num(row["nominal_flops"]), _num(row["params"]), _num(row["time"]),
                         _ci(*r.time_ratio_ci95), str(row["note"]))
                        + ((_num(row["accuracy"]), _num(row["accuracy_change"]),
                            r.accuracy_note or "-") if trained else ()))
        blocks += [Heading(network, 3)]
        if trained:  # dnncost whatif --train (dnncost.whatif.accuracy)
            blocks.append(Paragraph(
                f"Trained with the study's recipe (whatif --train): the original reaches a "
                f"validation accuracy of {_num(trained[0])}; accuracy_change is the transformed "
                "network's accuracy minus the original's."))
        blocks += [Table(columns + (("accuracy", "accuracy_change", "accuracy_note") if trained
                                    else ()), tuple(rows)),
                   FigureBlock(f"whatif_{i + 1}.png", plots.png_bytes(flops_vs_time(results,
                                                                                    title=network)),
                               f"{network}: FLOPs saved against time saved; the dashed line is "
                               "time proportional to FLOPs.")]
    if len(by_network) > 1:
        everything = [r for results in by_network.values() for r in results]
        blocks.append(FigureBlock(
            "whatif_all.png", plots.png_bytes(flops_vs_time(everything, title="every network")),
            "Every network (colour) and technique (marker): which techniques turn FLOPs into time "
            "on this machine; the dashed line is time proportional to FLOPs."))
    return blocks


UNSEEN_COLUMNS = ("input", "step", "method", "n", "MAPE", "within ±10%", "Spearman ρ",
                  "error / per-kernel error")
UNSEEN_LABELS = {"per_kernel": "per-kernel", "flops": "FLOPs-only", "params": "params-only",
                 "roofline": "roofline"}


def unseen_blocks(store: Store) -> list[Block]:
    """'Unseen networks': each stored ``dnncost evaluate --unseen`` protocol on each machine -- the
    machine, the calibration, the table per configuration, step and method, the run-to-run noise,
    what was left out, and the predicted-vs-measured figure; without results, the command to run."""
    from dnncost.reporting import plots
    from dnncost.study.unseen import COMMAND, unseen_groups

    groups = [g for g in unseen_groups(store) if g.result.points]
    blocks: list[Block] = [Heading("Unseen networks: step time predicted before training", 2)]
    if not groups:
        return blocks + [Paragraph(
            "The store holds no unseen-network results. Every torchvision classification network "
            "that is not in the zoo is timed and predicted (training and validation step, 3x32x32 at "
            "batch 32 and 3x224x224 at batch 8) by `dnncost calibrate --ops` followed by:"),
            Code(f"{COMMAND} --calibration stored --db {store.path}"),
            Paragraph("(without --calibration it calibrates first; --quick for a smoke run); each "
                      "result is kept as it is measured and a rerun resumes. Then run "
                      "`dnncost report` again.")]
    blocks.append(Paragraph(
        "Networks the per-kernel model never saw: its calibration times random networks only, never "
        "a torchvision, timm or zoo network. Baselines are one scale factor per mode fitted on the "
        "calibration's random networks, never on these: FLOPs-only, params-only, and a roofline "
        "(sum of max(FLOPs / peak, bytes / bandwidth)). 'error / per-kernel error' is the method's "
        "MAPE over the per-kernel model's."))
    for i, group in enumerate(groups):
        env, cfg, result = group.environment, group.config, group.result
        cal = result.calibration
        held_out = cal.get("held_out")
        held = held_out if isinstance(held_out, dict) else {}
        modes = sorted(held, key=lambda m: (m != "train", m))  # the training step first
        held_text = ", ".join(f"{m} {_pct(held[m].get('mape'))}" for m in modes
                              if isinstance(held[m], dict)) or "not recorded"
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
                      f"{_num(cfg.get('max_step_gflops'))} GFLOPs a step left out."),
            Paragraph(f"Calibration {cfg.get('calibration_id', '?')}: "
                      f"{'a QUICK (rough) one, ' if cal.get('quick') else ''}"
                      f"{cal.get('networks', '?')} random networks, {cal.get('kernels', '?')} timed "
                      f"kernels, torch {cal.get('torch_version') or '?'}, {cal.get('threads', '?')} "
                      f"threads; held-out MAPE on random networks it did not fit: {held_text}"
                      + ("" if cal.get("fingerprint") == group.fingerprint else
                         "; fitted on another machine than the one timed here") + "."),
            Paragraph("Produced by:"), Code("\n".join(group.commands) or COMMAND)]
        rows = result.rows()
        blocks.append(Table(UNSEEN_COLUMNS, tuple(
            (str(r["input"]), str(r["step"]), UNSEEN_LABELS.get(str(r["method"]), str(r["method"])),
             str(r["n"]), f"{_num(r['mape_pct'])}%", f"{_num(r['within_10pct'])}%",
             _num(r["spearman"], 2), _num(r["x_per_kernel_error"], 2)) for r in rows)))
        noise = result.noise()
        if any(math.isfinite(v) for v in noise.values()):
            blocks.append(Paragraph("Run-to-run noise (median over networks of the spread of the "
                                    "round medians): " + ", ".join(
                                        f"{k} {_pct(v)}" for k, v in noise.items()) + "."))
        if result.skipped:
            blocks.append(Paragraph("Left out: " + "; ".join(
                f"{k} ({v})" for k, v in result.skipped.items()) + "."))
        blocks.append(FigureBlock(
            f"unseen_{i + 1}.png" if len(groups) > 1 else "unseen.png",
            plots.png_bytes(plots.unseen_predicted_vs_measured(result)),
            "Predicted against measured step time of networks the predictor never saw, per input "
            "configuration and step; grey band: within ±10%."))
    return blocks


# -- rendering -----------------------------------------------------------------------------------------
def _md_text(text: str) -> str:
    """Text safe in Markdown: markup characters as HTML entities (renderers pass raw HTML on)."""
    return html.escape(text, quote=False)


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block], *, figure_dir: str = "figures") -> str:
    """Markdown with figures referenced as PNG files under ``figure_dir``; text escaped."""
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {_md_text(b.text)}")
        elif isinstance(b, Paragraph):
            out.append(f"**{_md_text(b.text)}**" if b.emphasis else _md_text(b.text))
        elif isinstance(b, Code):
            out.append(f"```\n{b.text}\n```")
        elif isinstance(b, Table):
            out.append("\n".join(
                ["| " + " | ".join(_md_cell(c) for c in b.columns) + " |",
                 "|" + "|".join("---" for _ in b.columns) + "|"]
                + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]))
        elif isinstance(b, FigureBlock):
            caption = _md_text(b.caption)
            out.append(f"![{caption}]({figure_dir}/{b.filename})\n\n*{caption}*")
    return "\n\n".join(out) + "\n"


def render_html(blocks: Sequence[Block], *, title: str = "dnncost study") -> str:
    """One self-contained page: images inline as base64 PNG, every text escaped, no scripts."""
    e = html.escape
    body = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            body.append(f'<p class="verdict"><strong>{e(b.text)}</strong></p>' if b.emphasis
                        else f"<p>{e(b.text)}</p>")
        elif isinstance(b, Code):
            body.append(f"<pre>{e(b.text)}</pre>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{e(c)}</th>" for c in b.columns)
            rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, FigureBlock):
            data = base64.b64encode(b.png).decode("ascii")
            body.append(f'<figure><img alt="{e(b.caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{e(b.caption)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><link rel=\"icon\" href=\"data:,\">"
            f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def check_output_folder(out: str | Path) -> Path:
    """The report folder ``out``; OutputError when it is a file, or cannot be created or written
    (checked before a long study, so that its report is not lost at the end)."""
    folder = Path(out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"report folder '{folder}' is an existing file; give a folder path "
                          "(it is created if missing)")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot create report folder '{folder}': '{existing}' is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write the report into '{folder}': '{existing}' is not writable")
    return folder


def check_output_file(out: str | Path) -> Path:
    """The file ``out`` a result (a figure) will be written to; OutputError when it is a folder,
    its folder is missing, or it cannot be written (tried: a new file is created and removed, an
    existing one opened for appending, which changes nothing) -- checked before long work, so that
    nothing measured is lost at the end. Nothing is left behind."""
    path = Path(out).expanduser()
    if path.is_dir():
        raise OutputError(f"cannot write '{path}': it is a folder; give a file name such as "
                          f"{path / 'whatif.png'}")
    if not path.parent.is_dir():
        raise OutputError(f"cannot write '{path}': folder '{path.parent}' does not exist")
    existed = path.exists()
    try:
        with path.open("ab"):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write '{path}': {exc.strerror or exc}") from None
    if not existed:
        path.unlink()
    return path


def write_report(store: Store, out: str | Path) -> ReportFiles:
    """Analyse ``store`` and write report.md (+ figures/), report.html, networks.csv, fits.csv,
    results.json and, when the store holds data-parallel results, data_parallel.csv into ``out``;
    OutputError when the folder cannot be written."""
    folder = check_output_folder(out)
    blocks, analysed = report_blocks(store)
    try:
        return _write(folder, blocks, analysed)
    except OSError as exc:
        raise OutputError(f"cannot write the report into '{folder}': {exc.strerror or exc} "
                          f"({exc.filename})") from exc


def _write(folder: Path, blocks: Sequence[Block],
           analysed: Sequence[tuple[Group, StudyAnalysis]]) -> ReportFiles:
    figure_dir = folder / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for b in blocks:
        if isinstance(b, FigureBlock):
            path = figure_dir / b.filename
            path.write_bytes(b.png)
            figures.append(path)
    files = ReportFiles(folder=folder, markdown=folder / "report.md", html=folder / "report.html",
                        networks_csv=folder / "networks.csv", fits_csv=folder / "fits.csv",
                        json=folder / "results.json", figures=tuple(figures),
                        verdicts=tuple(a.verdict.headline for _, a in analysed))
    files.markdown.write_text(render_markdown(blocks), encoding="utf-8")
    files.html.write_text(render_html(blocks), encoding="utf-8")
    network_rows, fit_rows, payload, dp_rows = [], [], [], []
    for group, analysis in analysed:
        key = {"config_hash": group.config_hash, "fingerprint": group.fingerprint}
        network_rows += [{**key, **r} for r in analysis.network_rows()]
        if analysis.data_parallel is not None:
            dp_rows += [{**key, **r.to_row()} for r in analysis.data_parallel.rows]
        fit_rows += [{**key, **r} for r in analysis.fit_rows()]
        payload.append({**key, "config": dict(group.config), "environment": dict(group.environment),
                        "calibration": group.calibration, **analysis.to_dict(),
                        "machine_drift": machine_drift(group).to_dict()})
    files.networks_csv.write_text(render_csv(network_rows) + "\n", encoding="utf-8")
    files.fits_csv.write_text(render_csv(fit_rows) + "\n", encoding="utf-8")
    files.json.write_text(render_json(payload) + "\n", encoding="utf-8")
    if dp_rows:
        dp_csv = folder / "data_parallel.csv"
        dp_csv.write_text(render_csv(dp_rows) + "\n", encoding="utf-8")
        files = replace(files, data_parallel_csv=dp_csv)
    return files


__all__ = ["ReportFiles", "check_output_file", "check_output_folder", "data_parallel_table",
           "fits_table", "network_table", "render_html", "render_markdown", "report_blocks",
           "unseen_blocks", "write_report"]
