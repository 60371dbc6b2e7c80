"""``dnncost study``: count, time and train a set of networks, store every result, write the report."""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from dnncost.commands._common import warnings_once
from dnncost.commands._exit_codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from dnncost.core.kinds import OPTIMIZERS
from dnncost.study.defaults import DEFAULT_DB, DEFAULT_OUT, NATIVE
from dnncost.study.stages import Stage, describe_split

if TYPE_CHECKING:
    from dnncost.study.config import StudyConfig


@dataclass(frozen=True)
class StudyOption:
    """One ``dnncost study`` flag that sets one StudyConfig field: the parser is built from these
    and the reproduce command (:func:`reproduce_command`) is written from them, so a new option is
    one entry here."""

    field: str  # the StudyConfig field
    flag: str
    help: str
    type: Callable[[str], Any] = str  # argparse's type
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    boolean: bool = False  # --flag / --no-flag
    to_config: Callable[[Any], Any] = lambda v: v  # the parsed value as the field holds it
    to_text: Callable[[Any], str] = str  # the field's value as the flag takes it
    none_flag: str | None = None  # a flag of its own that sets the field to None (excludes flag)
    none_help: str = ""

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def none_dest(self) -> str | None:
        return self.none_flag.removeprefix("--").replace("-", "_") if self.none_flag else None

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        if self.boolean:
            parser.add_argument(self.flag, action=argparse.BooleanOptionalAction, default=None,
                                help=self.help)
            return
        group = parser.add_mutually_exclusive_group() if self.none_flag else parser
        group.add_argument(self.flag, type=self.type, metavar=self.metavar,
                           choices=self.choices, default=None, help=self.help)
        if self.none_flag:
            group.add_argument(self.none_flag, action="store_true", help=self.none_help)

    def value(self, args: argparse.Namespace) -> tuple[bool, Any]:
        """(given, the field's value) from the parsed ``args``."""
        if self.none_dest and getattr(args, self.none_dest):
            return True, None
        given = getattr(args, self.dest)
        return (given is not None), (self.to_config(given) if given is not None else None)

    def words(self, value: Any) -> list[str]:
        """The command-line words that set the field to ``value``."""
        if self.boolean:
            return [self.flag if value else "--no-" + self.flag.removeprefix("--")]
        if value is None and self.none_flag:
            return [self.none_flag]
        return [self.flag, self.to_text(value)]


#: The study's options, each a StudyConfig field (models, family, input size and the
#: data-parallel flags choose what is studied and are handled apart).
OPTIONS = (
    StudyOption("dataset", "--dataset", metavar="SPEC",
                help="digits (default) | synthetic | cifar10:PATH | mnist:PATH | imagefolder:PATH"),
    StudyOption("batch_size", "--batch-size", type=int, metavar="B",
                help="batch size (default: 32; 8 at --input-size 224)"),
    StudyOption("epochs", "--epochs", type=int, metavar="N",
                help="the cap of each network's training to the target accuracy, or with "
                     "--fixed-epochs exactly the epochs it trains (default: 3; 0 at 224); a "
                     "family's recipe may train a multiple of them (dnncost.training.recipe)"),
    StudyOption("target_accuracy", "--target-accuracy", type=float, metavar="A",
                help="train each network until its validation accuracy first reaches A, a share of "
                     "the validation set (default: 0.9), and report the time to it "
                     "(time-to-accuracy)",
                none_flag="--fixed-epochs",
                none_help="train every network for exactly --epochs epochs (times its family's "
                          "multiple) with no early stop and no time to a target, validating at the "
                          "end of each epoch: the paper's fixed-epoch protocol"),
    StudyOption("validations_per_epoch", "--validations-per-epoch", type=int, metavar="K",
                help="validate K times an epoch on the whole validation split to place the crossing "
                     "of the target to 1/K epoch (default: 2 with a target, 1 with --fixed-epochs); "
                     "each pass costs about a twelfth of a digits epoch"),
    StudyOption("seeds", "--seeds", type=int, metavar="N",
                help="train each network from seeds 0..N-1 (default: 1), so the report states how "
                     "much the seed moves time-to-accuracy; rerunning with more adds seeds"),
    StudyOption("device", "--device", help="cpu (default), cuda or cuda:N"),
    StudyOption("threads", "--threads", type=int, metavar="N",
                help="intra-op CPU threads (default: torch's current setting)"),
    StudyOption("repeats", "--repeats", type=int, metavar="N",
                help="independent repeats of each step timing (default: 5); rerunning with more "
                     "adds repeats to the stored ones"),
    StudyOption("step_budget_s", "--step-budget", type=float, metavar="SECONDS",
                help="time steps in each repeat until they total SECONDS, at least 6 steps "
                     "(default: 0.5); 0: time exactly --steps steps instead",
                to_config=lambda v: None if v == 0 else v,
                to_text=lambda v: "0" if v is None else str(v)),
    StudyOption("steps", "--steps", type=int, metavar="N",
                help="timed steps per repeat with --step-budget 0 (default: 6)"),
    StudyOption("warmup", "--warmup", type=int, metavar="N",
                help="untimed warm-up steps before each repeat (default: 2)"),
    StudyOption("lr", "--lr", type=float,
                help="one learning rate for every network (default: each family's rate from "
                     "the training recipe, dnncost.training.recipe)"),
    StudyOption("optimizer", "--optimizer", choices=OPTIMIZERS,
                help="sgd (momentum 0.9, default), adam or adamw"),
    StudyOption("train_limit", "--train-limit", type=int, metavar="N",
                help="train on at most N images (and validate on N/4) per epoch"),
    StudyOption("breakdown", "--breakdown", boolean=True,
                help="profile where each network's training-step time goes, by layer type "
                     "(default: on at 32, off at 224)"),
    StudyOption("work", "--work", boolean=True,
                help="cost vs work: time the training step of lenet5, resnet20 and "
                     "mobilenet_v1_cifar (when studied) over batch sizes 1-128 and input sizes "
                     "32-128 (default: on; off with --quick)"),
    StudyOption("predictor", "--predictor", boolean=True,
                help="fit a quick per-operator time model (about a minute) when this machine's "
                     "calibration has none, so the report predicts every network's step time "
                     "(default: on, CPU only; off with --quick)"),
    StudyOption("whatif", "--whatif", metavar="T1,T2|all",
                help="also run dnncost whatif on each network's training step: these "
                     "transformations (NAME or NAME:VALUE) or 'all' (those dnncost whatif runs "
                     "by default); --steps pairs each",
                to_config=lambda v: "" if v == "all" else v,
                to_text=lambda v: v or "all"),
    StudyOption("whatif_train", "--whatif-train", boolean=True,
                help="with --whatif: also train the original and each transformed network with "
                     "the recipe for --epochs on --dataset, so accuracy stands beside the time "
                     "(dnncost whatif --train; trains each network once more)"),
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study", help="the experiment: how does measured time relate to computation?",
        description="For each network: count its computation, time its training and validation "
                    "steps, train and validate it for real, and store every result in SQLite as it "
                    "is measured; then analyse and write the report. Rerunning the same command "
                    "resumes; a larger --repeats adds repeats. Each network trains until its "
                    "validation accuracy reaches --target-accuracy (time-to-accuracy), its "
                    "recipe's epochs being the cap; --fixed-epochs trains exactly the epochs. "
                    "Without --models/--family it runs the embedded default: the zoo's CIFAR-sized "
                    "networks of the seven families on scikit-learn's digits (about 8 minutes on 2 "
                    "CPU cores).")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--models", metavar="NAMES",
                       help="comma-separated networks (zoo or torchvision names; default: the embedded set)")
    which.add_argument("--family", metavar="F",
                       help="every zoo network of one family at --input-size (e.g. resnet, vgg)")
    parser.add_argument("--input-size", choices=("32", "224", NATIVE), default=None,
                        help="32: CIFAR-sized networks (the default set); 224: ImageNet-sized forms, "
                             "step timing only unless --epochs is given; with --models, every named "
                             "network gets this input (default with --models: native, each "
                             "network's own)")
    for option in OPTIONS:
        option.add_to(parser)
    from dnncost.commands._distributed import add_distributed_arguments  # as `dnncost time` does

    add_distributed_arguments(parser)  # --nproc N, --backend gloo|nccl, --master-port PORT
    parser.add_argument("--db", default=DEFAULT_DB, metavar="PATH",
                        help=f"results database (default: {DEFAULT_DB})")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"report folder (default: {DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny study (3 small networks at batch 8, at most 1 epoch on 64 "
                             "images, 2 repeats of 2 steps): a smoke test in well under a minute")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    """The StudyConfig the arguments ask for: the default (or --quick) one, then each given flag."""
    from dnncost.study.config import default_config, quick_config

    names = tuple(m.strip() for m in (args.models or "").split(",") if m.strip())
    if args.input_size is None:
        size = None if names else 32
    else:
        size = None if args.input_size == NATIVE else int(args.input_size)
    config = quick_config() if args.quick else default_config(size, models=names)
    overrides: dict[str, Any] = {o.field: value for o in OPTIONS
                                 for given, value in [o.value(args)] if given}
    if args.quick and args.input_size is not None:
        overrides["input_size"] = size
    if args.models is not None:
        if not names:
            from dnncost.core.errors import ModelNotFoundError

            raise ModelNotFoundError("--models needs at least one network name")
        overrides["models"] = names
    elif args.family is not None:
        overrides["models"], overrides["family"] = (), args.family
    overrides.update(_data_parallel(args, device=overrides.get("device", config.device)))
    return replace(config, **overrides)


def _data_parallel(args: argparse.Namespace, *, device: str) -> dict[str, object]:
    """world_size and backend from --nproc/--backend (nothing without --nproc)."""
    from dnncost.core.errors import InputSpecError

    if args.nproc is None:
        if args.backend is not None:
            raise InputSpecError("--backend needs --nproc N (N >= 2 data-parallel workers)")
        return {}
    if args.nproc < 2:
        raise InputSpecError(f"--nproc must be 2 or more for a data-parallel study, got "
                             f"{args.nproc}; leave it out for the single-process study")
    backend = args.backend or ("nccl" if device.split(":")[0] == "cuda" else "gloo")
    return {"world_size": args.nproc, "backend": backend}


def reproduce_command(config: StudyConfig, *, db: str, out: str | None = None) -> str:
    """The ``dnncost study`` command line that runs (and so resumes) exactly ``config``: the
    flags whose values differ from the defaults the command line would start from."""
    from dnncost.study.config import InputSize, default_config

    base = default_config(config.input_size, models=config.models)
    parts = ["dnncost", "study"]
    if config.models:
        parts += ["--models", ",".join(config.models)]
    if config.family:
        parts += ["--family", config.family]
    if config.input_size != (None if config.models else InputSize.CIFAR.value):
        parts += ["--input-size", str(config.input_size or NATIVE)]
    for option in OPTIONS:
        value = getattr(config, option.field)
        if value != getattr(base, option.field):
            parts += option.words(value)
    if config.world_size > 1:
        parts += ["--nproc", str(config.world_size), "--backend", config.backend]
    parts += ["--db", db]
    if out is not None:
        parts += ["--out", out]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from dnncost.reporting.report import check_output_folder, write_report
    from dnncost.study.config import check_data_parallel, check_dataset, select_models
    from dnncost.study.findings import study_findings
    from dnncost.study.store import open_store
    from dnncost.study.sweep import run_study

    start = time.perf_counter()
    config = config_from_args(args)
    select_models(config)  # unknown names are reported before anything is stored
    check_data_parallel(config)  # so are workers this machine cannot run
    check_dataset(config)  # and a dataset that is unknown, missing or malformed
    check_output_folder(args.out)  # and a report folder that cannot be written
    command = reproduce_command(config, db=args.db, out=args.out if args.out != DEFAULT_OUT else None)
    with open_store(args.db) as store:
        store.lock()
        before = store.result_count()
        try:
            with warnings_once("study"):
                summary = run_study(config, store, progress=not args.no_progress, command=command,
                                    port=args.master_port)
        except KeyboardInterrupt:
            kept = store.result_count()
            print(f"dnncost study: interrupted; {kept} results are kept in {args.db} "
                  f"({kept - before} from this run). Resume with:\n  {command}", file=sys.stderr)
            return EXIT_INTERRUPTED
        report_start = time.perf_counter()
        findings = study_findings(store)
    files = write_report(findings, args.out)
    stages = {**summary.stage_seconds, Stage.REPORT.value: time.perf_counter() - report_start}
    remeasured = (f", {summary.remeasured} timing repeats re-measured (their reference probe "
                  "drifted)" if summary.remeasured else "")
    print(f"study of {len(summary.networks)} networks: {summary.measured} results measured now, "
          f"{summary.skipped} already stored (resumed){remeasured}; database {args.db}")
    print(f"wall time {describe_split(stages, total_s=time.perf_counter() - start)}")
    for name, error in summary.failed.items():
        print(f"  FAILED {name}: {error}")
    for headline in files.verdicts:
        print(headline)
    extra = f", {files.data_parallel_csv.name}" if files.data_parallel_csv else ""
    print(f"report: {files.html}  (also {files.markdown.name}, {files.networks_csv.name}{extra}, "
          f"{files.json.name} in {files.folder})")
    return EXIT_OK if summary.complete else EXIT_FAILED
