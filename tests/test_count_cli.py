"""``dnncost count``: output formats and one clear line with exit code 2 for each bad input."""
from __future__ import annotations

import csv
import io
import json
import textwrap

import pytest

from dnncost.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_table_states_the_convention(capsys):
    code, out, _ = run(capsys, "count", "torchvision:resnet18", "--depth", "1")
    assert code == 0
    assert "layer1" in out and "Convention: MACs" in out and "11,689,512" in out
    assert "Counting convention (dnncost)" not in out  # the full text only with --convention


def test_csv_by_operator_in_train_mode(capsys):
    code, out, _ = run(capsys, "count", "torchvision:resnet18", "--mode", "train", "--by", "operator",
                       "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and {r["phase"] for r in rows} == {"forward", "backward", "optimizer"}
    conv = [r for r in rows if r["operator"] == "aten.convolution"]
    assert conv and int(conv[0]["calls"]) == 20  # resnet18 has 20 convolutions


def test_batch_size_and_input_override(capsys):
    code, out, _ = run(capsys, "count", "torchvision:resnet18", "--input", "3x112x112",
                       "--batch-size", "4", "--format", "json")
    summary = json.loads(out)["summary"]
    assert code == 0 and summary["batch_size"] == 4 and summary["input_shape"] == "3x112x112"


def test_model_from_a_file(tmp_path, capsys):
    path = tmp_path / "net.py"
    path.write_text(textwrap.dedent("""
        import torch.nn as nn
        def make():
            return nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
        not_a_model = 3
    """))
    code, out, _ = run(capsys, "count", f"{path}:make", "--input", "3x4", "--format", "json")
    assert code == 0 and json.loads(out)["summary"]["macs"] == 60  # 12 * 5
    code, _, err = run(capsys, "count", f"{path}:maek", "--input", "3x4")
    assert code == 2 and "has no 'maek'" in err and "make" in err
    code, _, err = run(capsys, "count", f"{path}:not_a_model", "--input", "3x4")
    assert code == 2 and "not an nn.Module" in err


@pytest.mark.parametrize("argv, message", [
    (["count", "resnet5O"], "unknown model 'resnet5O'"),
    (["count", "torchvision:resnet50", "--input", "3x224xabc"], "malformed input shape"),
    (["count", "torchvision:resnet50", "--input", "1x224x224"], "module 'conv1' (Conv2d)"),
    (["count", "torchvision:resnet50", "--batch-size", "0"], "batch size must be a positive"),
    (["count", "nothere.py:make"], "does not exist"),
])
def test_bad_input_one_line_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unknown_name_suggests_close_names(capsys):
    _, _, err = run(capsys, "count", "resnet5O")
    assert "Did you mean" in err and "resnet50" in err


def test_timm_without_timm(capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail
    code, _, err = run(capsys, "count", "timm:resnet50")
    assert code == 2 and "pip install timm" in err


def test_debug_shows_the_traceback():
    from dnncost.core.errors import InputSpecError

    with pytest.raises(InputSpecError):
        main(["--debug", "count", "torchvision:resnet50", "--input", "bad"])


def test_a_models_own_warnings_are_one_dnncost_line_each(tmp_path, capsys):
    """torch's notices raised inside a model (e.g. the nested-tensor prototype warning of
    TransformerEncoder) are shown once each, as one line, not as Python's file:line form."""
    path = tmp_path / "warns.py"
    path.write_text(textwrap.dedent('''
        import warnings
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 2)

            def forward(self, x):
                warnings.warn("a prototype API is used\\nsecond line of the notice", UserWarning)
                return self.fc(x)
    '''))
    code, _, err = run(capsys, "count", f"{path}:Net", "--input", "4", "--mode", "train")
    assert code == 0
    assert err.splitlines() == ["dnncost count: warning: a prototype API is used"]  # once, 1 line
