"""dnncost.measuring.breakdown: profiler time attributed to modules, layer types and operators, reconciled."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dnncost.core.step import LOSS_MODULE, OPTIMIZER_MODULE
from dnncost.counting.counter import count
from dnncost.measuring.breakdown import ACCUMULATE_GRAD, profile_breakdown


class Block(nn.Module):
    """A conv with a functional ReLU in its own forward (no ReLU module)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x))


SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def train_breakdown():
    torch.manual_seed(0)
    model = Net()
    report = count(model, mode="train", batch_size=8, input_shape=SHAPE)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    b = profile_breakdown(model, SHAPE, batch_size=8, threads=1, warmup=1, steps=3, report=report,
                          unprofiled_step_s=1e-3)
    return model, before, report, b


def test_time_lands_on_the_modules_that_ran_it(train_breakdown) -> None:
    _, _, _, b = train_breakdown
    rows = {r.name: r for r in b.by_module}
    # forward: conv in 'block.conv', the functional relu in 'block', linear in 'head.1'
    assert rows["block.conv"].forward_s > 0 and rows["block"].forward_s > 0
    assert rows["head.1"].forward_s > 0 and rows["head.0"].forward_s > 0
    # backward: attributed through autograd sequence numbers to the same modules
    assert rows["block.conv"].backward_s > 0 and rows["head.1"].backward_s > 0
    assert rows["block"].backward_s > 0  # ReluBackward0 belongs to the module calling F.relu
    assert rows[OPTIMIZER_MODULE].other_s > 0 and rows[LOSS_MODULE].forward_s > 0
    assert rows[ACCUMULATE_GRAD].backward_s > 0
    types = {r.name for r in b.by_module_type}
    assert {"Conv2d", "Block", "Linear", "Flatten", OPTIMIZER_MODULE, LOSS_MODULE} <= types
    ops = {r.name for r in b.by_operator}
    assert {"aten::conv2d", "ConvolutionBackward0", "aten::relu", "ReluBackward0"} <= ops


def test_parts_reconcile_with_the_step(train_breakdown) -> None:
    _, _, _, b = train_breakdown
    by_type = sum(r.total_s for r in b.by_module_type)
    assert sum(r.total_s for r in b.by_module) == pytest.approx(by_type)
    assert sum(r.total_s for r in b.by_operator) == pytest.approx(by_type)
    # parts are disjoint intervals inside the step, so they cannot exceed it (no double counting)
    assert 0 < b.attributed_s <= b.step_time_s and b.gap_s >= 0
    r = b.reconciliation()
    assert r["profiler_overhead"] == pytest.approx(b.step_time_s / 1e-3 - 1)
    shares = [row["time_share"] for row in b.rows("module_type")]
    assert sum(shares) + r["gap_share"] == pytest.approx(1.0)


def test_flops_shares_come_from_the_counter(train_breakdown) -> None:
    _, _, report, b = train_breakdown
    conv = next(r for r in b.rows("module_type") if r["module_type"] == "Conv2d")
    assert conv["flops"] == report.by_module_type()["Conv2d"].flops
    assert conv["flops_share"] == pytest.approx(conv["flops"] / report.total().flops)
    assert b.total_flops == report.total().flops


def test_model_left_as_found(train_breakdown) -> None:
    model, before, _, _ = train_breakdown
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_eval_breakdown_has_no_backward_or_optimizer() -> None:
    b = profile_breakdown(Net(), SHAPE, batch_size=4, mode="eval", threads=1, warmup=1, steps=2)
    assert all(r.backward_s == 0 and r.other_s == 0 for r in b.by_module_type)
    assert {r.name for r in b.by_module_type} >= {"Conv2d", "Linear"}
    assert OPTIMIZER_MODULE not in {r.name for r in b.by_module_type}
    assert b.total_flops is None and b.rows()[0]["flops_share"] is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_breakdown_uses_kernel_time() -> None:
    b = profile_breakdown(Net(), SHAPE, batch_size=64, device="cuda", warmup=2, steps=3)
    rows = {r.name: r for r in b.by_module_type}
    assert rows["Conv2d"].forward_s > 0 and rows["Conv2d"].backward_s > 0
    assert 0 < b.attributed_s <= b.step_time_s


BREAKDOWN_SCRIPT = """
import os, sys
from torch import nn
from dnncost.measuring.breakdown import profile_breakdown
net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
profile_breakdown(net, (3, 8, 8), batch_size=2, mode="train", steps=1, warmup=1)
print(os.environ.get("KINETO_LOG_LEVEL", "unset"))  # as it was before the breakdown
"""


@pytest.mark.parametrize("level", [None, "0"], ids=["default: silent", "the user's level stands"])
def test_breakdown_writes_nothing_to_stderr_unless_asked(level: str | None) -> None:
    """libkineto printed 'USDT: ... profiler_start' and, without a GPU, 'ERROR: ...
    gpuGetDeviceCount failed' into every `dnncost study`; KINETO_LOG_LEVEL=0 (verbose) still works."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}
    if level is not None:
        env["KINETO_LOG_LEVEL"] = level
    done = subprocess.run([sys.executable, "-c", BREAKDOWN_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == (level or "unset")  # the environment is left as found
    if level is None:
        assert done.stderr == ""
    else:
        assert done.stderr.strip() != ""  # kineto's verbose lines, as the user asked
