"""No code from data (issue 26, N4-N6): a calibration file or a study database someone else wrote
can hold anything, and reading it runs nothing.

Two live payloads of the kind that once ran under the old pickled model format -- one that
truncates a file (``scipy.io._fortran.FortranFile(path, 'w')``), one that makes pytest import an
arbitrary file (``numpy._pytesttester.PytestTester``) -- and one naming a module that does not
exist are planted (a) in this machine's calibration file, then ``dnncost predict lenet5`` runs
in-process, and (b) in a study database's ``environments.operator_model``, then ``dnncost report``
runs. Each time: the victim file is intact, the sentinel module was never imported, and the user
gets exit code 2 and one line (predict) or a plain line in the report, never a traceback.
"""
from __future__ import annotations

import base64
import json
import pickle
import sys
from pathlib import Path

import pytest
import torch

from dnncost.cli import main
from dnncost.core.environment import machine_fingerprint
from dnncost.measuring.calibrate import Calibration, save_calibration
from dnncost.study.store import open_store

SENTINEL = "dnncost_sentinel_payload_test"  # the module the import payload would make pytest import
VICTIM_TEXT = "a user's file that must survive\n"


class _Truncate:
    """Unpickled: FortranFile(path, 'w') opens ``path`` for writing, truncating it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):  # noqa: ANN204
        from scipy.io._fortran import FortranFile

        return (FortranFile, (self.path, "w"))


class _Import:
    """Unpickled: PytestTester('numpy')('fast', 1, [file]) runs pytest on ``file``, importing it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):  # noqa: ANN204
        from numpy._pytesttester import PytestTester

        return (PytestTester("numpy"), ("fast", 1, [self.path]))


def _missing_module() -> bytes:
    """A pickle naming a module that does not exist (issue 26 N4: a ModuleNotFoundError traceback)."""
    return b"\x80\x04cdnncost_no_such_module\nThing\n)R."


@pytest.fixture
def planted(tmp_path: Path) -> dict[str, object]:
    victim = tmp_path / "victim.txt"
    victim.write_text(VICTIM_TEXT)
    marker = tmp_path / "imported.marker"
    evil = tmp_path / f"{SENTINEL}.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    return {"victim": victim, "marker": marker,
            "payloads": {"truncate": pickle.dumps({"kinds": _Truncate(victim)}),
                         "import": pickle.dumps({"kinds": _Import(evil)}),
                         "missing module": _missing_module()}}


def _old_model(payload: bytes, **fields: object) -> dict[str, object]:
    """A stored model in the old format: its regressors a base64 pickle."""
    return {"fingerprint": "fp", "threads": 1, "step_weights": [0.0] * 7, **fields,
            "regressors": base64.b64encode(payload).decode("ascii")}


def _intact(planted: dict[str, object]) -> None:
    assert Path(str(planted["victim"])).read_text() == VICTIM_TEXT
    assert not Path(str(planted["marker"])).exists()
    assert SENTINEL not in sys.modules


def test_the_payloads_are_live(tmp_path: Path, planted: dict[str, object]) -> None:
    """Positive control: unpickled, the truncating payload does empty a file (so the checks below
    would see it), and the import payload names pytest's runner."""
    control = tmp_path / "control.txt"
    control.write_text(VICTIM_TEXT)
    pickle.loads(pickle.dumps(_Truncate(control)))  # noqa: S301 -- the point of the control
    assert control.read_text() == ""
    assert b"PytestTester" in planted["payloads"]["import"]  # type: ignore[index]


def _plant_calibration(model: object) -> Path:
    threads = torch.get_num_threads()
    cal = Calibration(fingerprint=machine_fingerprint("cpu", threads=threads), device="cpu",
                      threads=threads, created="2026-01-01T00:00:00+00:00", environment={})
    return save_calibration(cal.with_section("kernels", {"model": model}))


@pytest.mark.parametrize("payload", ["truncate", "import", "missing module"])
def test_a_hostile_calibration_file_runs_nothing_when_predicting(
        payload: str, planted: dict[str, object], tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path / "cache"))
    path = _plant_calibration(_old_model(planted["payloads"][payload]))  # type: ignore[index]
    code = main(["predict", "lenet5"])
    _intact(planted)  # first: nothing ran, whatever the message
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "old format" in err and "dnncost calibrate --ops" in err
    code = main(["predict", "lenet5", "--calibration", str(path)])  # a file given by path
    _intact(planted)
    err = capsys.readouterr().err
    assert code == 2 and "old format" in err and "Traceback" not in err


def test_a_garbled_new_format_model_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    """A model in the new format with a pickle where the trees' numbers belong."""
    from test_predict import tiny_model

    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path / "cache"))
    model = tiny_model().to_dict()
    model["fallback"]["trees"] = base64.b64encode(pickle.dumps({"x": 1})).decode("ascii")  # type: ignore[index]
    _plant_calibration(model)
    assert main(["predict", "lenet5"]) == 2
    err = capsys.readouterr().err
    assert "unreadable" in err and "model.fallback.trees must be an object" in err
    assert "Traceback" not in err


def _study_with_model(path: Path, model: object) -> Path:
    """A small study database whose machine row holds ``model`` as its per-operator time model."""
    from test_report import _store

    _store(path)
    with open_store(path) as store:
        store.conn.execute("UPDATE environments SET operator_model = ?", (json.dumps(model),))
    return path


@pytest.mark.parametrize("payload", ["truncate", "import", "missing module"])
def test_a_hostile_study_database_runs_nothing_when_reporting(
        payload: str, planted: dict[str, object], tmp_path: Path, capsys) -> None:
    db = _study_with_model(tmp_path / "s.sqlite", _old_model(planted["payloads"][payload]))  # type: ignore[index]
    code = main(["report", "--db", str(db), "--out", str(tmp_path / "r")])
    _intact(planted)  # first: nothing ran, whatever the report says
    capsys.readouterr()
    text = (tmp_path / "r" / "report.md").read_text()
    assert code == 0 and "stored with these results is in an old format" in text
    assert "dnncost calibrate --ops --refit" in text


def test_a_garbled_model_in_a_study_database_is_a_report_line(tmp_path: Path, capsys) -> None:
    db = _study_with_model(tmp_path / "s.sqlite", {"format": "dnncost-operator-model", "version": 2,
                                                   "kinds": "os.system('echo pwned')"})
    assert main(["report", "--db", str(db), "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    text = (tmp_path / "r" / "report.md").read_text()
    assert "stored with these results is unreadable (model lacks fingerprint" in text
