"""The standing bad-input suite: every command, fed what a hostile new user would type.

Each case is (argv, exit code, a phrase the one-line error must contain). Every case must end with
that exit code, one ``dnncost <cmd>: error: ...`` line holding the phrase, no traceback, and nothing
left behind in the scratch folder it runs in (the known exceptions: LEAVES_FILES). Cases
run in-process through :func:`dnncost.cli.main` (fast); a few run as real subprocesses, the way a
user meets them. ``{models}`` in an argv is a folder of small broken model files, ``{tmp}`` a
scratch folder with a garbage file, an empty file and a plain file in it. A case runs with dnncost's
cache in ``{tmp}/cache`` unless it names another (a path through the plain file: a folder that
cannot be written). Nothing may be left behind: no temporary file under ``{tmp}``, no process.
"""
from __future__ import annotations

import errno
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
HUGE = "99999999999"  # a batch size no machine holds: 1e11 samples
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

def raising_inputs(batch_size):
    raise RuntimeError("input factory exploded")
'''


@dataclass(frozen=True)
class Case:
    """One bad input: the command line, the exit code, a phrase of the error line."""

    argv: tuple[str, ...]
    code: int
    phrase: str
    cache: str = "{tmp}/cache"  # DNNCOST_CACHE_DIR while the case runs

    @property
    def id(self) -> str:
        return " ".join(self.argv)[:80]


def case(line: str, phrase: str, code: int = BAD, *, cache: str = "{tmp}/cache") -> Case:
    return Case(tuple(line.split()), code, phrase, cache)


UNWRITABLE_CACHE = "{tmp}/plain.txt/cache"  # a path through a file: no folder can be made there


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
    case("count lenet5 --input {models}/m.py:raising_inputs",
         "building the inputs '{models}/m.py:raising_inputs' (batch size 1) failed: RuntimeError: "
         "input factory exploded"),
    case("count", "required: MODEL"),
    # -- time
    case("time nosuchnet", "unknown model 'nosuchnet'"),
    case("time resnet20 --input 1x32x32 --repeats 1", "failed in module 'conv1' (Conv2d)"),
    case("time {models}/m.py:raising_factory --repeats 1", "building model"),
    case("time {models}/m.py:noparams --input 3x8x8 --repeats 1", "no trainable parameters"),
    case("time {models}/m.py:boom --input 4 --repeats 1", "failed in its own forward (Boom)"),
    case("time lenet5 --steps 0", "steps >= 1"),
    case("time lenet5 --repeats 0", "steps >= 1"),  # the old name of --steps
    case("time lenet5 --warmup -1 --repeats 1", "warmup"),
    case("time lenet5 --budget 0", "budget"),
    case("time lenet5 --steps 1 --budget 1", "not allowed with argument"),
    case("time lenet5 --threads 0 --repeats 1", "threads must be a positive integer"),
    case(f"time lenet5 --threads {MANY_CORES} --repeats 1", "logical CPU"),
    case("time lenet5 --device cpu:7 --repeats 1", "'cpu:7' does not exist"),
    case("time lenet5 --device gpu --repeats 1", "device 'gpu'"),
    case("time lenet5 --batch-size 0 --repeats 1", "batch size"),
    case("time resnet20 --batch-size 100000000 --repeats 1", "counted peak estimate"),
    case(f"time lenet5 --batch-size {HUGE} --repeats 1", "counted peak estimate"),
    case("time lenet5 --input {models}/m.py:raising_inputs --repeats 1", "building the inputs"),
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
    case("train lenet5 --target-accuracy 1.5", "target accuracy must lie in (0, 1]"),
    case("train lenet5 --target-accuracy 0", "target accuracy must lie in (0, 1]"),
    case("train lenet5 --target-accuracy -0.5", "target accuracy must lie in (0, 1]"),
    case("train lenet5 --target-accuracy 90", "(0.9 for 90%)"),
    case("train lenet5 --target-accuracy nan", "target accuracy must lie in (0, 1]"),
    case("train lenet5 --target-accuracy high", "invalid float value: 'high'"),
    case("train lenet5 --target-accuracy 0.9 --validations-per-epoch 0",
         "validations per epoch must be a positive integer, got 0"),
    case("train lenet5 --target-accuracy 0.9 --max-epochs 0",
         "epochs (the cap of a run to a target accuracy) must be a positive integer"),
    case("train lenet5 --target-accuracy 0.9 --epochs 3", "give the cap as --max-epochs N"),
    case("train lenet5 --max-epochs 3", "--max-epochs belongs to a run to --target-accuracy"),
    case("train lenet5 --validations-per-epoch 2",
         "--validations-per-epoch belongs to a run to --target-accuracy"),
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
    case(f"predict lenet5 --batch-size {HUGE}", "its input batch and weights alone"),  # nothing run
    case("predict lenet5 --input {models}/m.py:raising_inputs", "building the inputs"),
    # -- whatif
    case(f"whatif lenet5 --batch-size {HUGE} --repeats 1 --warmup 0", "counted peak estimate"),
    case("whatif lenet5 --input {models}/m.py:raising_inputs --repeats 1 --warmup 0",
         "building the inputs"),
    # -- calibrate
    case("calibrate --device tpu --quick", "device 'tpu'"),
    case("calibrate --threads 0 --quick", "thread"),
    case("calibrate --threads a,b --quick", "thread"),
    case(f"calibrate --threads {MANY_CORES} --quick", "logical CPU"),
    case("calibrate --dtypes int8 --quick", "int8"),
    case("calibrate --quick", "cannot write to dnncost's cache folder '{tmp}/plain.txt/cache/calibration' "
         "(Not a directory): part of that path is a file; set DNNCOST_CACHE_DIR", cache=UNWRITABLE_CACHE),
    case("calibrate --ops --quick", "DNNCOST_CACHE_DIR", cache=UNWRITABLE_CACHE),  # before measuring
    case("calibrate --ops --refit", "DNNCOST_CACHE_DIR", cache=UNWRITABLE_CACHE),
    # -- evaluate
    case("evaluate --db /nonexistent/x.sqlite", "/nonexistent/x.sqlite"),
    case("evaluate --db {tmp}/garbage.sqlite", "garbage.sqlite"),
    case("evaluate --unseen --models nosuchnet --db {tmp}/u.sqlite",
         "not unseen network: 'nosuchnet' (no torchvision classification network)"),
    case("evaluate --unseen --models resnet50 --db {tmp}/u.sqlite", "'resnet50' (in dnncost's zoo)"),
    case("evaluate --unseen --models convnxt_tiny,efficientnet_b0 --db {tmp}/u.sqlite",
         "'convnxt_tiny' (did you mean: convnext_tiny"),
    case("evaluate --unseen --models , --db {tmp}/u.sqlite", "at least one network name"),
    case("evaluate --unseen --models timm:nosuchnet_xyz --db {tmp}/u.sqlite", "nosuchnet_xyz"),
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


def _left_behind(folders: dict[str, str]) -> list[Path]:
    """Temporary files under the scratch folder (dnncost's cache included)."""
    return sorted(Path(folders["tmp"]).rglob("*.tmp"))


def _scratch(folders: dict[str, str]) -> list[Path]:
    """What the scratch folder holds, less the cache folder (state a command may create)."""
    cache = Path(folders["tmp"], "cache")
    return sorted(p for p in Path(folders["tmp"]).rglob("*") if cache not in (p, *p.parents))


def _children() -> set[int]:
    """The live child processes of this one (from /proc; empty where there is none)."""
    me, found = os.getpid(), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


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
    monkeypatch.setenv("DNNCOST_CACHE_DIR", c.cache.format(**folders))  # no calibration
    threads = torch.get_num_threads()
    children = _children()
    before = _scratch(folders)
    try:
        code = main(_argv(c, folders))
    except SystemExit as exc:  # argparse's usage errors leave through parser.exit
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == c.code, err[-2000:]
    phrase = c.phrase.format(**folders)
    if c.argv and c.argv[0] not in LEAVES_FILES:
        assert _scratch(folders) == before  # nothing left behind
    if c.argv:
        lines = _error_lines(err)
        assert len(lines) == 1, err[-2000:]
        command = c.argv[0] if c.argv[0] in COMMANDS else None  # else argparse's top level
        assert lines[0].startswith(f"dnncost {command}: error: " if command else "dnncost: error: ")
        assert phrase in lines[0], lines[0]
    else:
        assert phrase in out + err
    assert _left_behind(folders) == [], "temporary files left behind"
    assert _children() <= children, "processes left behind"


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


# -- a cache folder that cannot be written (N1): read-only, full ----------------------------------
def _calibrate_into(cache: Path, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str]) -> str:
    """`dnncost calibrate --quick` with its cache in ``cache``: exit 2, one line naming the folder
    and DNNCOST_CACHE_DIR, no traceback, no temporary file; returns the line."""
    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(cache))
    threads = torch.get_num_threads()
    try:
        code = main(["calibrate", "--quick", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert code == BAD and "Traceback" not in err, err[-2000:]
    (line,) = _error_lines(err)
    assert f"cache folder '{cache / 'calibration'}'" in line and "DNNCOST_CACHE_DIR" in line, line
    assert sorted(cache.rglob("*.tmp")) == []
    return line


def _refuse_under(cache: Path, error: int) -> object:
    """``os.open`` that fails with ``error`` for paths under ``cache``, as a read-only or full
    file system does (running as root, a chmod cannot make a folder read-only)."""
    real = os.open

    def fake(path, flags, mode=0o777, *, dir_fd=None):  # noqa: ANN001, ANN202
        if str(path).startswith(str(cache)):
            raise OSError(error, os.strerror(error), str(path))
        return real(path, flags, mode, dir_fd=dir_fd)
    return fake


def _full_after_open(cache: Path) -> object:
    """``os.fdopen`` whose writes fail with ENOSPC for files under ``cache``: the file exists,
    empty, when the disk turns out full -- what left a 0-byte ``*.json.tmp`` behind."""
    real = os.fdopen

    class Full:
        def __init__(self, f) -> None:  # noqa: ANN001
            self.f = f

        def __enter__(self) -> Full:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fake(fd, *args, **kwargs):  # noqa: ANN001, ANN202
        f = real(fd, *args, **kwargs)
        return Full(f) if os.readlink(f"/proc/self/fd/{fd}").startswith(str(cache)) else f
    return fake


def test_a_read_only_cache_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setattr(os, "open", _refuse_under(cache, errno.EROFS))
    line = _calibrate_into(cache, monkeypatch, capsys)
    assert "(Read-only file system): make it writable or set DNNCOST_CACHE_DIR" in line


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into a folder whatever its mode")
def test_a_cache_folder_without_write_permission_is_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    (cache / "calibration").mkdir(parents=True)
    (cache / "calibration").chmod(0o500)
    try:
        assert "(Permission denied)" in _calibrate_into(cache, monkeypatch, capsys)
    finally:
        (cache / "calibration").chmod(0o700)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_a_full_cache_disk_is_one_line_and_leaves_no_temporary_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setattr(os, "fdopen", _full_after_open(cache))
    line = _calibrate_into(cache, monkeypatch, capsys)
    assert "(No space left on device): free some space there or set DNNCOST_CACHE_DIR" in line
    assert list((cache / "calibration").iterdir()) == []  # the empty file it began is gone too


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_every_cache_writer_leaves_nothing_on_a_full_disk(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The calibration's samples file is an error like the calibration; the reference probe's
    record is optional (its run goes on) -- and neither leaves a temporary file."""
    from dnncost.core.errors import OutputError
    from dnncost.measuring.probe import load_reference, record_probe
    from dnncost.prediction.samples import StoredSamples, samples_path, save_samples

    cache = tmp_path / "cache"
    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(cache))
    monkeypatch.setattr(os, "fdopen", _full_after_open(cache))
    with pytest.raises(OutputError, match="No space left on device"):
        save_samples(StoredSamples((), ()), samples_path("fp"))
    assert record_probe(0.001, "cpu", threads=1) == 0.001  # this run's own reference
    assert load_reference("cpu", threads=1) is None  # nothing kept
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_counting_allocates_nothing_whatever_the_batch() -> None:
    """The training step's labels are made on the meta device as well (N2): the 1e11 labels of
    batch 99999999999 would take 800 GB; counting must not touch real memory at any batch size."""
    from dnncost.counting.counter import count
    from dnncost.models.loading import load_model

    report = count(load_model("lenet5"), mode="train", batch_size=int(HUGE))
    assert report.batch_size == int(HUGE) and report.total().macs > 0
