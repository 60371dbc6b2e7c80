"""Data-parallel timing on the command line: ``--nproc N``, ``--backend``, ``--master-port``,
shared by ``dnncost time`` and ``dnncost study``; the measuring is dnncost.distributed.data_parallel's."""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from dnncost.commands._exit_codes import EXIT_OK
from dnncost.core.errors import InputSpecError
from dnncost.core.kinds import Backend


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    """``--nproc N``, ``--backend gloo|nccl`` and ``--master-port PORT``."""
    parser.add_argument("--nproc", type=int, default=None, metavar="N",
                        help="train data-parallel on N workers with torch.distributed + DDP "
                             "(default: one plain process; under torchrun: its world size)")
    parser.add_argument("--backend", choices=[b.value for b in Backend], default=None,
                        help="torch.distributed backend: gloo (CPU workers) or nccl (one GPU per "
                             "worker); default: the one that goes with --device")
    parser.add_argument("--master-port", type=int, default=None, metavar="PORT",
                        help="rendezvous port on 127.0.0.1 (default: a free one)")


def wants_distributed(args: argparse.Namespace) -> bool:
    """True when the command line asked for data-parallel timing (or runs under torchrun)."""
    from dnncost.distributed.launch import launched_by_torchrun

    return getattr(args, "nproc", None) is not None or launched_by_torchrun()


def run_distributed_cli(args: argparse.Namespace, loaded_model: Any,
                        input_shape: Sequence[int]) -> int:
    """``dnncost time --nproc N``: measure as ``args`` asks and print a table, JSON or CSV (rank 0
    only under torchrun). ``loaded_model`` is the LoadedModel of ``args.model``."""
    from dnncost.core.step import Mode, OptimizerKind
    from dnncost.distributed.data_parallel import measure_distributed
    from dnncost.distributed.launch import GroupOptions, backend_for_device, launched_by_torchrun
    from dnncost.measuring.timing import StepOptions
    from dnncost.reporting.formatting import human, render

    if args.mode != Mode.TRAIN.value:
        raise InputSpecError("--nproc needs --mode train: data-parallel workers only communicate "
                             "when they train")
    if args.budget is not None:
        raise InputSpecError("--budget is not supported with --nproc; give --steps instead")
    if args.warmup < 1:
        raise InputSpecError(f"--nproc needs --warmup 1 or more (DDP rebuilds its buckets after "
                             f"the first step), got --warmup {args.warmup}")
    try:
        backend = backend_for_device(args.device, args.backend)
    except InputSpecError:
        raise InputSpecError(f"--backend {args.backend} does not go with --device {args.device}: "
                             "gloo runs CPU workers (--device cpu), nccl one GPU per worker "
                             "(--device cuda)") from None
    options = StepOptions(batch_size=args.batch_size, mode=Mode.TRAIN, device=args.device,
                          threads=args.threads, warmup=args.warmup, steps=args.steps,
                          optimizer=OptimizerKind(args.optimizer))
    spec = args.model if isinstance(getattr(args, "model", None), str) else loaded_model.module
    timing = measure_distributed(spec, input_shape, options=options, nproc=args.nproc,
                                 group=GroupOptions(backend.value), port=args.master_port,
                                 name=loaded_model.name)
    if launched_by_torchrun() and os.environ.get("RANK") != "0":
        return EXIT_OK
    footer = (f"{timing.world_size} {timing.backend} workers ({timing.launcher}), batch "
              f"{timing.batch_size} and {timing.threads} thread(s) per worker; step = slowest "
              f"worker's median; all-reduce = time with a gradient all-reduce in flight (DDP hook); "
              f"comm_share = all-reduce / step; efficiency = t1 / tN ({timing.scaling} scaling)")
    row = timing.to_row()
    if args.format == "table":
        for key in ("params", "flops", "gradient_bytes", "allreduce_bytes"):
            row[key] = human(row[key])
    print(render([row], args.format, title=f"{timing.model}: data-parallel training step",
                 footer=footer, json_payload=timing.to_dict()))
    return EXIT_OK


__all__ = ["add_distributed_arguments", "run_distributed_cli", "wants_distributed"]
