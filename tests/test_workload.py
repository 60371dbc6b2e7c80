"""dnncost.core.workload: the one header of every step's result record, and Mode reading as its name."""
from __future__ import annotations

import json

from dnncost.core.kinds import Mode
from dnncost.core.workload import Workload
from dnncost.counting.cost import CostReport
from dnncost.distributed.data_parallel import DistributedTiming
from dnncost.measuring.breakdown import Breakdown
from dnncost.measuring.timing import StepTiming


def test_every_step_result_is_a_workload() -> None:
    for record in (CostReport, StepTiming, Breakdown, DistributedTiming):
        assert issubclass(record, Workload), record
        assert [f for f in record.__dataclass_fields__][:4] == ["model", "mode", "input_shape",
                                                                 "batch_size"]


def test_a_workload_keeps_its_mode_as_mode_and_its_shape_as_a_tuple() -> None:
    w = Workload("lenet5", "train", [1, 32, 32], 8)  # type: ignore[arg-type]
    assert w.mode is Mode.TRAIN and w.input_shape == (1, 32, 32)
    assert w.shape_text == "8x1x32x32" and w.workload == w


def test_mode_reads_as_its_name() -> None:
    assert f"{Mode.TRAIN}" == str(Mode.TRAIN) == "train" and f"{Mode.EVAL:>5}" == " eval"
    assert {"train": 1}[Mode.TRAIN] == 1 and json.dumps([Mode.EVAL]) == '["eval"]'
