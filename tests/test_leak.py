"""Leak-proof by construction: calibrating the time predictor never builds a published network.

Two checks: every module of dnncost.prediction but the unseen-network protocol imports nothing from
torchvision.models, timm or dnncost's zoo (read from their source, every import, also inside
functions); and a real (tiny) calibration run
under a profiler hook that fails on any Python function executed from torchvision/models/ or
dnncost/models/ -- with a positive control showing the hook does catch such a call.
"""
from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import dnncost.prediction as prediction_pkg
from dnncost.prediction import calibration, sampling

UNSEEN_PROTOCOL = "unseen.py"  # the one module that builds published networks: to time them
CALIBRATION_MODULES = sorted(p.name for p in Path(prediction_pkg.__file__).parent.glob("*.py")
                             if p.name != UNSEEN_PROTOCOL)
FORBIDDEN = ("torchvision", "timm", "dnncost.models")


def imported_names(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("module", CALIBRATION_MODULES)
def test_calibration_modules_import_no_published_network(module: str) -> None:
    path = Path(prediction_pkg.__file__).parent / module
    bad = [n for n in imported_names(path) if n.startswith(FORBIDDEN)]
    assert bad == [], f"{module} imports {bad}"


MODEL_CODE = (f"{Path('torchvision') / 'models'}", f"{Path('dnncost') / 'models'}")


@contextmanager
def no_published_network() -> Iterator[list[str]]:
    """Record every Python function run from torchvision's or dnncost's model code."""
    called: list[str] = []

    def hook(frame, event, arg):  # noqa: ANN001, ANN202
        if event == "call" and any(part in frame.f_code.co_filename for part in MODEL_CODE):
            called.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

    sys.setprofile(hook)
    try:
        yield called
    finally:
        sys.setprofile(None)


def test_the_guard_catches_a_published_network() -> None:
    import torchvision.models as tvm

    with no_published_network() as called:
        tvm.squeezenet1_1()
    assert any("squeezenet" in c for c in called)


@pytest.mark.slow  # minutes on a loaded 2-core machine: the profiler hook slows every call
def test_a_calibration_run_builds_no_published_network(monkeypatch) -> None:
    # tiny networks only (a training step of at most 3e7 FLOPs), two of them and two kernel
    # probes, no time budget
    monkeypatch.setattr(calibration, "MAX_TRAIN_FLOPS", 3e7)
    monkeypatch.setattr(calibration, "kernel_probes", lambda: sampling.padded_probes()[:2])
    with no_published_network() as called:
        done = calibration.calibrate_operators(quick=True, budget_s=0.0, min_networks=2)
    assert called == []
    assert done.model.networks == 1 and len({s.name for s in done.held_out}) == 1  # of 2: one held out
    assert done.model.kernels > 0
