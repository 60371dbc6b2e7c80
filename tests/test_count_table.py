"""The count table: module tree with parent totals, types, params, output shapes and shares;
operator and module-type views; validated ``by``; golden files for the human-facing text.

Regenerate the golden files after an intended change of the table:
    DNNCOST_REGENERATE_GOLDEN=1 python3 -m pytest tests/test_count_table.py
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from dnncost.cli import main
from dnncost.core.errors import InputSpecError
from dnncost.counting.counter import count

GOLDEN = Path(__file__).parent / "golden"
REGENERATE = os.environ.get("DNNCOST_REGENERATE_GOLDEN") == "1"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if REGENERATE:
        path.write_text(text + "\n")
    assert path.exists(), f"missing golden file {path}: run with DNNCOST_REGENERATE_GOLDEN=1"
    assert text + "\n" == path.read_text(), f"{name} changed; regenerate if intended"


class Block(nn.Module):
    """conv 2->2 (3x3, pad 1, no bias) + its own relu (a parent's own operator)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))  # the relu belongs to Block itself


class Net(nn.Module):
    """stem conv 1->2 (3x3, pad 1, no bias) -> Block -> flatten -> linear 32->3, on 1x4x4."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.block = Block()
        self.fc = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(self.stem(x)).flatten(1))


# stem: 2 out ch * 16 positions * 1 in ch * 9 = 288 MACs; block.conv: 2 * 16 * 2 * 9 = 576 MACs;
# fc: 32 * 3 = 96 MACs; block's own relu: 32 FLOPs; fc bias: 3 FLOPs
STEM, CONV, FC = 288, 576, 96


def test_parent_rows_are_their_own_operators_plus_their_children():
    r = count(Net(), input_shape=(1, 4, 4))
    rows = {row["module"]: row for row in r.module_rows(depth=-1)}
    assert rows["(model)"]["macs"] == STEM + CONV + FC == r.total().macs
    assert rows["block"]["macs"] == CONV and rows["block.conv"]["macs"] == CONV
    assert rows["block"]["flops"] == 2 * CONV + 32  # its child's 1,152 + its own relu's 32
    assert rows["block"]["params"] == 2 * 2 * 9 and rows["(model)"]["params"] == 18 + 36 + 99
    assert rows["block"]["output_shape"] == "1x2x4x4" and rows["fc"]["output_shape"] == "1x3"
    assert rows["block"]["type"] == "Block" and rows["stem"]["type"] == "Conv2d"
    assert rows["block.conv"]["macs_%"] == pytest.approx(100 * 576 / 960)  # 60.0
    assert [row["module"] for row in r.module_rows(depth=1)] == ["(model)", "stem", "block", "fc"]


def test_train_rows_add_the_loss_and_the_optimizer():
    r = count(Net(), input_shape=(1, 4, 4), mode="train")
    rows = {row["module"]: row for row in r.module_rows(depth=1)}
    assert list(rows)[-2:] == ["(loss)", "(optimizer)"]
    # the model (forward + backward) + the loss + the optimizer step = the whole step
    assert sum(rows[k]["flops"] for k in ("(model)", "(loss)", "(optimizer)")) == r.total().flops


def test_by_is_validated_and_module_type_means_module_type():
    r = count(Net(), input_shape=(1, 4, 4))
    with pytest.raises(InputSpecError, match="unknown grouping 'layer'; choose one of module, operator"):
        r.to_dict(by="layer")
    rows = r.to_dict(by="module_type")["by_module_type"]
    assert {row["module_type"] for row in rows} == {"Conv2d", "Block", "Linear"}
    conv = next(row for row in rows if row["module_type"] == "Conv2d")
    assert conv["calls"] == 2 and conv["macs"] == STEM + CONV
    ops = r.to_rows("operator")
    assert next(row for row in ops if row["operator"] == "aten.convolution")["calls"] == 2


def test_adam_in_place_updates_count_the_bytes_they_write():
    r = count(Net(), input_shape=(1, 4, 4), mode="train", optimizer="adam")
    params = 18 + 36 + 99  # 153 float32 elements -> 612 bytes per state tensor list
    in_place = [rec for rec in r.records if rec.phase.value == "optimizer" and rec.op.endswith("_")]
    assert in_place and all(rec.cost.bytes_written > 0 for rec in in_place)
    lerp = next(rec for rec in in_place if rec.op == "aten._foreach_lerp_")  # exp_avg += ...
    assert lerp.cost.bytes_written == 4 * params


def test_print_report_is_the_table():
    r = count(Net(), input_shape=(1, 4, 4))
    assert str(r) == r.table() and "(model)" in str(r) and len(str(r).splitlines()) < 15
    check_golden("net_by_module.txt", r.table(depth=-1))
    check_golden("net_by_operator_train.txt",
                 count(Net(), input_shape=(1, 4, 4), mode="train").table("operator"))
    check_golden("net_full_convention.txt", r.table(full_convention=True))


def test_cli_table_by_module_type_and_convention(capsys):
    assert main(["count", "torchvision:resnet18", "--by", "module_type", "--plain"]) == 0
    out = capsys.readouterr().out
    assert "Conv2d" in out and "BatchNorm2d" in out and "module type" in out
    assert "Counting convention (dnncost)" not in out and "--convention" in out
    assert main(["count", "torchvision:resnet18", "--convention", "--plain"]) == 0
    out = capsys.readouterr().out
    assert "Counting convention (dnncost)" in out and "  layer1" in out
    assert main(["count", "torchvision:resnet18", "--depth", "2", "--plain"]) == 0
    check_golden("resnet18_depth2.txt", capsys.readouterr().out.rstrip("\n"))  # no time or path in it


def test_python_dash_m_dnncost():
    done = subprocess.run([sys.executable, "-m", "dnncost", "--version"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0 and done.stdout.startswith("dnncost ")
