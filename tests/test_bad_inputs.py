"""The standing bad-input suite: every command, fed what a hostile new user would type.

Each case is (argv, exit code, a phrase the one-line error must contain). Every case must end with
that exit code, one ``dnncost <cmd>: error: ...`` line holding the phrase, no traceback, and nothing
left behind in the scratch folder it runs in (the known exceptions: LEAVES_FILES). Cases
run in-process through :func:`dnncost.cli.main` (fast); a few run as real subprocesses, the way a
user meets them. ``{models}`` in an argv is a folder of small broken model files, ``{tmp}`` a
scratch folder with a garbage file, an empty file and a plain file in it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from dnncost.cli import EXIT_BAD_INPUT, main

BAD = EXIT_BAD_INPUT
COMMANDS = {"count", "time", "train", "zoo", "predict", "calibrate", "evaluate", "study", "report",
            "merge", "whatif"}
MANY_CORES = str((os.cpu_count() or 1) * 64)  # more threads / workers than this machine has
LEAVES_FILES = {"merge"}  # known: 'merge missing.sqlite -o out.sqlite' creates out.sqlite (and its
# lock) before it finds an input missing; every other command leaves the scratch folder as it was

MODELS = '''
import torch
from torch import nn

def raising_factory():
    raise RuntimeError("factory exploded")

class NoParams(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10] * 2

def noparams():
    return NoParams()

class Boom(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        raise ValueError("forward exploded")

def boom():
    return Boom()

def not_a_module():
    return 42
'''


@dataclass(frozen=True)
class Case:
    """One bad input: the command line, the exit code, a phrase of the error line."""

    argv: tuple[str, ...]
    code: int
    phrase: str

    @property
    def id(self) -> str:
        return " ".join(self.argv)[:80]


def case(line: str, phrase: str, code: int = BAD) -> Case:
    return Case(tuple(line.split()), code, phrase)


CASES = [
    # -- the command line itself
    case("bogus", "invalid choice: 'bogus'"),
    case("", "COMMAND"),  # no command: usage, exit 2
    # -- count
    case("count nosuchnet", "unknown model 'nosuchnet'"),
    case("count resnt50", "Did you mean: resnet50,"),
    case("count resnet20 --input 1x32x32", "failed in module 'conv1' (Conv2d)"),
    case("count resnet20 --input 3xAx32", "input"),
    case("count resnet20 --input 0x32x32", "input"),
    case("count resnet20 --batch-size 0", "batch size"),
    case("count resnet20 --batch-size -3", "batch size"),
    case("count resnet20 --batch-size abc", "invalid int value: 'abc'"),
    case("count resnet20 --mode bogus", "invalid choice: 'bogus'"),
    case("count resnet20 --device tpu", "device 'tpu'"),
    case("count resnet20 --device cpu:7", "'cpu:7' does not exist"),
    case("count resnet20 --optimizer lion", "invalid choice: 'lion'"),
    case("count resnet20 --format xml", "invalid choice: 'xml'"),
    case("count resnet20 --depth x", "invalid int value: 'x'"),
    case("count /nonexistent/net.py:build", "does not exist"),
    case("count {models}/m.py", "no factory"),
    case("count {models}/m.py:nosuch", "has no 'nosuch'"),
    case("count {models}/m.py:raising_factory --input 3x8x8", "building model 'm.py:raising_factory' failed"),
    case("count {models}/m.py:boom --input 4", "failed in its own forward (Boom)"),
    case("count {models}/m.py:not_a_module", "not a torch.nn.Module"),
    case("count {models}/broken.py:f", "importing"),
    case("count torchvision:resnet5000", "unknown torchvision model"),
    case("count resnet20 --device cpu --input 3x100000x100000", "memory"),
    case("count", "required: MODEL"),
    # -- time
    case("time nosuchnet", "unknown model 'nosuchnet'"),
    case("time resnet20 --input 1x32x32 --repeats 1", "failed in module 'conv1' (Conv2d)"),
    case("time {models}/m.py:raising_factory --repeats 1", "building model"),
    case("time {models}/m.py:noparams --input 3x8x8 --repeats 1", "no trainable parameters"),
    case("time {models}/m.py:boom --input 4 --repeats 1", "failed in its own forward (Boom)"),
    case("time lenet5 --repeats 0", "repeats"),
    case("time lenet5 --warmup -1 --repeats 1", "warmup"),
    case("time lenet5 --budget 0", "budget"),
    case("time lenet5 --repeats 1 --budget 1", "not allowed with argument"),
    case("time lenet5 --threads 0 --repeats 1", "threads must be a positive integer"),
    case(f"time lenet5 --threads {MANY_CORES} --repeats 1", "logical CPU"),
    case("time lenet5 --device cpu:7 --repeats 1", "'cpu:7' does not exist"),
    case("time lenet5 --device gpu --repeats 1", "device 'gpu'"),
    case("time lenet5 --batch-size 0 --repeats 1", "batch size"),
    case("time resnet20 --batch-size 100000000 --repeats 1", "counted peak estimate"),
    case("time lenet5 --mode sideways", "invalid choice: 'sideways'"),
    case("time lenet5 --optimizer lion", "invalid choice: 'lion'"),
    case("time lenet5 --nproc 0", "positive integer"),
    case(f"time lenet5 --nproc {MANY_CORES}", "CPU core"),
    case("time lenet5 --nproc 2 --mode eval", "--mode train"),
    case("time lenet5 --nproc 2 --backend nccl", "does not go with --device cpu"),
    case("time lenet5 --nproc 2 --budget 1", "--budget is not supported"),
    case("time lenet5 --nproc 2 --warmup 0", "--warmup 1 or more"),
    case("time lenet5 --nproc 2 --master-port 70000", "port must be between 1 and 65535"),
    case("time lenet5 --nproc 2 --backend mpi", "invalid choice: 'mpi'"),
    # -- train
    case("train nosuchnet", "unknown model 'nosuchnet'"),
    case("train lenet5 --dataset nosuch --epochs 1", "unknown dataset 'nosuch'"),
    case("train lenet5 --dataset cifar10:/nonexistent --epochs 1", "/nonexistent"),
    case("train lenet5 --epochs 0", "epochs"),
    case("train lenet5 --batch-size 0 --epochs 1", "batch size"),
    case("train lenet5 --lr 0 --epochs 1", "learning rate"),
    case("train lenet5 --lr -1 --epochs 1", "learning rate"),
    case("train lenet5 --threads 0 --epochs 1", "threads must be a positive integer"),
    case("train lenet5 --device cpu:3 --epochs 1", "'cpu:3' does not exist"),
    case("train lenet5 --optimizer lion", "invalid choice: 'lion'"),
    case("train lenet5 --workers -1 --epochs 1", "data-loading workers"),
    case("train lenet5 --seed -1 --epochs 1", "seed must be an integer from 0"),
    case("train lenet5 --val-fraction 1.5 --epochs 1", "val fraction"),
    case("train {models}/m.py:noparams --dataset synthetic --epochs 1 --no-progress",
         "no trainable parameters"),
    case("train {models}/m.py:boom --dataset synthetic --epochs 1 --no-progress",
         "failed in its own forward (Boom)"),
    case("train {models}/m.py:raising_factory --dataset synthetic --epochs 1", "building model"),
    # -- zoo
    case("zoo --family nosuch", "unknown model family 'nosuch'"),
    case("zoo --size huge", "unknown model size 'huge'"),
    case("zoo --format xml", "invalid choice: 'xml'"),
    # -- predict
    case("predict nosuchnet", "unknown model 'nosuchnet'"),
    case("predict lenet5 --threads 0", "threads must be a positive integer"),
    case("predict lenet5 --batch-size 0", "positive integer, got 0"),
    case("predict lenet5 --input 1x2", "failed in module"),
    case("predict lenet5 --mode sideways", "invalid choice: 'sideways'"),
    # -- calibrate
    case("calibrate --device tpu --quick", "device 'tpu'"),
    case("calibrate --threads 0 --quick", "thread"),
    case("calibrate --threads a,b --quick", "thread"),
    case(f"calibrate --threads {MANY_CORES} --quick", "logical CPU"),
    case("calibrate --dtypes int8 --quick", "int8"),
    # -- evaluate
    case("evaluate --db /nonexistent/x.sqlite", "/nonexistent/x.sqlite"),
    case("evaluate --db {tmp}/garbage.sqlite", "garbage.sqlite"),
    # -- study
    case("study --models nosuchnet --no-progress", "nosuchnet"),
    case("study --models lenet5 --dataset cifar10:/nonexistent --db {tmp}/s.sqlite --no-progress",
         "/nonexistent"),
    case("study --models lenet5 --nproc 1 --db {tmp}/s.sqlite", "2 or more"),
    case("study --models lenet5 --backend gloo --db {tmp}/s.sqlite", "needs --nproc"),
    case(f"study --models lenet5 --nproc {MANY_CORES} --db {{tmp}}/s.sqlite", "CPU core"),
    case("study --models lenet5 --db {tmp}/garbage.sqlite --no-progress", "garbage.sqlite"),
    # -- report
    case("report --db /nonexistent/x.sqlite", "/nonexistent/x.sqlite"),
    case("report --db {tmp}/garbage.sqlite", "garbage.sqlite"),
    case("report --db {tmp}/empty.sqlite", "empty.sqlite"),
    # -- merge
    case("merge", "required"),
    case("merge {tmp}/missing.sqlite -o {tmp}/out.sqlite", "missing.sqlite"),
    case("merge {tmp}/garbage.sqlite -o {tmp}/out.sqlite", "garbage.sqlite"),
    # -- whatif (each fails before anything is built or measured)
    case("whatif", "required: MODEL"),
    case("whatif --only low_rank", "required: MODEL"),
    Case(("whatif", "resnet20", "--only", ""), BAD, "no transformation named in ''"),
    case("whatif resnet20 --only ,", "name one or more of"),
    case("whatif resnet20 --only lowrank", "Did you mean: low_rank"),
    case("whatif resnet20 --only prune_channels:1.5", "strictly between 0 and 1"),
    case("whatif resnet20 --epochs 2", "--epochs set how --train trains"),
    case("whatif resnet20 --dataset synthetic", "--dataset set how --train trains"),
    case("whatif resnet20 --train --epochs 0", "--epochs must be a positive integer"),
    case("whatif resnet20 --out /nonexistent/whatif.png", "folder '/nonexistent' does not exist"),
    case("whatif resnet20 --out {tmp}", "it is a folder"),
    case("whatif resnet20 --out {tmp}/plain.txt/x.png", "does not exist"),
    case("whatif resnet20 --out /proc/whatif.png", "cannot write '/proc/whatif.png'"),
    case("whatif nosuchnet,resnet20", "unknown model 'nosuchnet'"),
    case("whatif resnet20 --mode sideways", "invalid choice: 'sideways'"),
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    models = tmp_path_factory.mktemp("models")
    (models / "m.py").write_text(MODELS)
    (models / "broken.py").write_text("def f(:\n")
    tmp = tmp_path_factory.mktemp("scratch")
    (tmp / "garbage.sqlite").write_bytes(b"this is not a database\n" * 200)
    (tmp / "empty.sqlite").write_bytes(b"")
    (tmp / "plain.txt").write_text("a file, not a folder\n")
    return {"models": str(models), "tmp": str(tmp)}


def _argv(c: Case, folders: dict[str, str]) -> list[str]:
    return [word.format(**folders) for word in c.argv]


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": error: " in line]


def test_the_suite_is_large_and_covers_every_command() -> None:
    assert len(CASES) >= 60
    assert {c.argv[0] for c in CASES if c.argv} >= COMMANDS


@pytest.mark.parametrize("c", CASES, ids=[c.id or "(nothing)" for c in CASES])
def test_bad_input_gives_one_clear_line(c: Case, folders: dict[str, str],
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    if "cuda" in c.argv and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(folders["tmp"])  # anything a command writes by default lands here
    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(Path(folders["tmp"], "cache")))  # no calibration
    threads = torch.get_num_threads()
    before = sorted(Path(folders["tmp"]).rglob("*"))
    try:
        code = main(_argv(c, folders))
    except SystemExit as exc:  # argparse's usage errors leave through parser.exit
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == c.code, err[-2000:]
    if c.argv and c.argv[0] not in LEAVES_FILES:
        assert sorted(Path(folders["tmp"]).rglob("*")) == before  # nothing left behind
    if c.argv:
        lines = _error_lines(err)
        assert len(lines) == 1, err[-2000:]
        command = c.argv[0] if c.argv[0] in COMMANDS else None  # else argparse's top level
        assert lines[0].startswith(f"dnncost {command}: error: " if command else "dnncost: error: ")
        assert c.phrase in lines[0], lines[0]
    else:
        assert c.phrase in out + err


def test_did_you_mean_names_each_candidate_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["count", "resnt50"]) == BAD
    (line,) = _error_lines(capsys.readouterr().err)
    names = line.split("Did you mean: ", 1)[1].split("?", 1)[0].split(", ")
    assert len(names) == len(set(names)) > 1, line


SUBPROCESS_CASES = [
    case("time resnet20 --input 1x32x32 --repeats 1", "failed in module 'conv1' (Conv2d)"),
    case("count resnet20 --mode bogus", "invalid choice: 'bogus'"),
    case("train {models}/m.py:boom --dataset synthetic --epochs 1 --no-progress",
         "failed in its own forward (Boom)"),
    case("whatif resnet20 --out /nonexistent/whatif.png", "does not exist"),
]


@pytest.mark.parametrize("c", SUBPROCESS_CASES, ids=[c.id for c in SUBPROCESS_CASES])
def test_bad_input_as_a_user_meets_it(c: Case, folders: dict[str, str]) -> None:
    env = {**os.environ, "DNNCOST_CACHE_DIR": str(Path(folders["tmp"], "cache"))}
    done = subprocess.run([sys.executable, "-m", "dnncost.cli", *_argv(c, folders)],
                          capture_output=True, text=True, timeout=300, cwd=folders["tmp"],
                          env=env, check=False)
    assert "Traceback" not in done.stdout + done.stderr
    assert done.returncode == c.code, done.stderr[-2000:]
    (line,) = _error_lines(done.stderr)
    assert c.phrase in line, line


def test_only_the_models_own_failures_are_renamed() -> None:
    """named_model_failure names the innermost module that raised; an error raised outside the
    model's code (a data loader, the loss) and dnncost's own errors pass through unchanged."""
    from torch import nn

    from dnncost.core.errors import InputSpecError, ModelFailedError
    from dnncost.core.failure import named_model_failure

    net = nn.Sequential(nn.Linear(4, 3), nn.Sequential(nn.ReLU(), nn.Linear(5, 2)))
    x = torch.zeros(2, 4)
    with pytest.raises(ModelFailedError, match=r"model 'net' failed in module '1\.1' \(Linear\) "
                                               r"on an input of shape 2x4 \(batch first\)"):
        with named_model_failure(net, name="net", inputs=(x,)):
            net(x)
    with pytest.raises(RuntimeError, match="not the model"):
        with named_model_failure(net, name="net", inputs=(x,)):
            raise RuntimeError("not the model")
    with pytest.raises(InputSpecError, match="already one line") as caught:
        with named_model_failure(net, name="net", inputs=(x,)):
            raise InputSpecError("already one line")
    assert type(caught.value) is InputSpecError
