"""Micro-benchmarks of single operators on this machine: what the per-operator time model learns from.

Each benchmark is a tiny module around one layer (a convolution of some shape, a linear layer, a
batch norm, an activation, a pooling, a concatenation, ...), timed by :func:`dnncost.measuring.timing.time_model`
in both modes exactly as the networks are (eval: forward under no_grad; train: zero_grad + forward +
cross-entropy + backward + SGD step), and counted by :func:`dnncost.counting.counter.count` so that every
operator call carries the same FLOPs and bytes as in a network. The suite draws shapes from wide,
generic ranges (seeded), never from the networks the model is judged on. A 4-d output is averaged
over its spatial dimensions before the loss, as a classifier's global pooling does, so that the loss
is the same small (batch, classes) cross-entropy a network computes; the input requires grad in train
mode, as a layer inside a network does, so the backward pass computes the input's gradient too.
"""
from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from dnncost.counting.cost import Cost, OpRecord, Phase
from dnncost.counting.counter import count
from dnncost.measuring.device import using_threads
from dnncost.measuring.measurement import NoisyMeasurementWarning
from dnncost.measuring.timing import time_model


class BenchKind(str, Enum):
    """What a micro-benchmark exercises."""

    CONV = "conv"
    GROUPED_CONV = "grouped_conv"
    DEPTHWISE_CONV = "depthwise_conv"
    LINEAR = "linear"
    BATCH_NORM = "batch_norm"
    ACTIVATION = "activation"
    ADD = "add"
    POOL = "pool"
    DROPOUT = "dropout"
    CONCAT = "concat"
    PAD = "pad"
    SHUFFLE = "shuffle"
    MLP = "mlp"  # many tiny layers: per-call and per-parameter overheads
    IDENTITY = "identity"  # no layer: the fixed cost of a step and of the pooling and loss around it


@dataclass(frozen=True)
class OpBench:
    """One micro-benchmark: a layer of ``kind`` with ``options``, on a (batch, *input_shape) input."""

    kind: BenchKind
    batch_size: int
    input_shape: tuple[int, ...]
    options: tuple[tuple[str, object], ...] = ()

    @property
    def opts(self) -> dict[str, object]:
        return dict(self.options)

    @property
    def name(self) -> str:
        opts = " ".join(f"{k}={v}" for k, v in self.options)
        return f"{self.kind.value} b{self.batch_size} {'x'.join(map(str, self.input_shape))} {opts}".strip()

    def build(self) -> nn.Module:
        """The benchmark's module (CPU, float32, seeded initialisation)."""
        torch.manual_seed(0)
        return _Bench(_LAYERS[self.kind](self.input_shape, self.opts))

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind.value, "batch_size": self.batch_size,
                "input_shape": list(self.input_shape), "options": dict(self.options)}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> OpBench:
        return cls(BenchKind(data["kind"]), int(data["batch_size"]),
                   tuple(int(s) for s in data["input_shape"]),
                   tuple(dict(data.get("options", {})).items()))


@dataclass(frozen=True)
class BenchResult:
    """One benchmark in one mode: its step time (the fastest pass's median), every pass's median,
    and the counted operator calls."""

    bench: OpBench
    mode: str  # 'eval' or 'train'
    seconds: float
    passes_s: tuple[float, ...]
    records: tuple[OpRecord, ...]

    def to_dict(self) -> dict[str, object]:
        return {"bench": self.bench.to_dict(), "mode": self.mode, "seconds": self.seconds,
                "passes_s": list(self.passes_s),
                "records": [_record_to_list(r) for r in self.records]}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> BenchResult:
        return cls(OpBench.from_dict(data["bench"]), str(data["mode"]), float(data["seconds"]),
                   tuple(float(s) for s in data["passes_s"]),
                   tuple(_record_from_list(r) for r in data["records"]))


def _record_to_list(r: OpRecord) -> list[object]:
    c = r.cost
    return [r.op, r.phase.value, r.module_type, c.macs, c.flops, c.bytes_read, c.bytes_written,
            [list(s) for s in r.shapes]]


def _record_from_list(item: Sequence[object]) -> OpRecord:
    op, phase, module_type, macs, flops, read, written, shapes = item
    return OpRecord(str(op), Phase(phase), "", str(module_type),
                    Cost(int(macs), int(flops), int(read), int(written)),
                    tuple(tuple(int(d) for d in s) for s in shapes))


# -- the modules -----------------------------------------------------------------------------------
class _Bench(nn.Module):
    """Wraps one layer as a network would see it: a grad-requiring input in train mode, a spatial
    mean before the (batch, classes) loss, and an unused parameter so that a parameter-free layer
    can still be given to an optimizer (an unused parameter has no gradient: SGD skips it)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self.anchor = nn.Parameter(torch.zeros(()))
        self.inplace = bool(getattr(layer, "inplace", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            x = x.detach().requires_grad_()  # a fresh leaf each step: its gradient is not accumulated
            if self.inplace:
                x = x.clone()  # an in-place layer needs a non-leaf input, as inside a network
        y = self.layer(x)
        return y.mean((2, 3)) if y.dim() == 4 else y.flatten(1)  # (B, C, H, W) -> (B, C)


class _Lambda(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], label: str) -> None:
        super().__init__()
        self.fn, self.label = fn, label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.label


def _conv(shape: tuple[int, ...], o: Mapping[str, object]) -> nn.Module:
    k = int(o["k"])
    return nn.Conv2d(shape[0], int(o["cout"]), k, stride=int(o.get("stride", 1)), padding=k // 2,
                     groups=int(o.get("groups", 1)), bias=bool(o.get("bias", False)))


def _depthwise(shape: tuple[int, ...], o: Mapping[str, object]) -> nn.Module:
    k = int(o["k"])
    return nn.Conv2d(shape[0], shape[0], k, stride=int(o.get("stride", 1)), padding=k // 2,
                     groups=shape[0], bias=False)


def _linear(shape: tuple[int, ...], o: Mapping[str, object]) -> nn.Module:
    return nn.Linear(shape[-1], int(o["out"]))


def _batch_norm(shape: tuple[int, ...], o: Mapping[str, object]) -> nn.Module:
    return nn.BatchNorm2d(shape[0])


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "relu_inplace": lambda: nn.ReLU(inplace=True), "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid, "hardswish": nn.Hardswish, "gelu": nn.GELU, "relu6": nn.ReLU6,
}


def _activation(shape: tuple[int, ...], o: Mapping[str, object]) -> nn.Module:
    return ACTIVATIONS[str(o["fn"])]()


def _add(shape: tuple[int, ...], o: Mapping[str, object]) -> nn.Module:
    # x + x: a residual add forward; in backward both branches' gradients are summed (one add)
    return _Lambda(lambda x: x + x, "x + x")


POOLS: dict[str, Callable[[], nn.Module]] = {  # max and average alternate: drawn in turn
    "max2": lambda: nn.MaxPool2d(2), "avg2": lambda: nn.AvgPool2d(2),
    "max3s2": lambda: nn.MaxPool2d(3, 2, padding=1), "avg3s1": lambda: nn.AvgPool2d(3, 1, padding=1),
    "adaptive_avg": lambda: nn.AdaptiveAvgPool2d(1),
}


def _pool(shape: tuple[int, ...], o: Mapping[str, object]) -> nn.Module:
    return POOLS[str(o["fn"])]()


def _dropout(shape: tuple[int, ...], o: Mapping[str, object]) -> nn.Module:
    return nn.Dropout(0.5)


def _concat(shape: tuple[int, ...], o: Mapping[str, object]) -> nn.Module:
    return _Lambda(lambda x: torch.cat([x, x], 1), "cat([x, x], 1)")


def _pad(shape: tuple[int, ...], o: Mapping[str, object]) -> nn.Module:
    c = shape[0] // 2  # subsample 2x and pad channels c/2 a side: ResNet's parameter-free shortcut
    return _Lambda(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, c, c)), "subsample + channel pad")


def _shuffle(shape: tuple[int, ...], o: Mapping[str, object]) -> nn.Module:
    g = int(o["groups"])

    def shuffle(x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.view(b, g, c // g, h, w).transpose(1, 2).contiguous().view(b, c, h, w)
    return _Lambda(shuffle, f"channel shuffle g={g}")


def _mlp(shape: tuple[int, ...], o: Mapping[str, object]) -> nn.Module:
    width, depth = shape[-1], int(o["depth"])
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers)


def _identity(shape: tuple[int, ...], o: Mapping[str, object]) -> nn.Module:
    return nn.Identity()


_LAYERS: dict[BenchKind, Callable[[tuple[int, ...], Mapping[str, object]], nn.Module]] = {
    BenchKind.CONV: _conv, BenchKind.GROUPED_CONV: _conv, BenchKind.DEPTHWISE_CONV: _depthwise,
    BenchKind.LINEAR: _linear, BenchKind.BATCH_NORM: _batch_norm, BenchKind.ACTIVATION: _activation,
    BenchKind.ADD: _add, BenchKind.POOL: _pool, BenchKind.DROPOUT: _dropout,
    BenchKind.CONCAT: _concat, BenchKind.PAD: _pad, BenchKind.SHUFFLE: _shuffle, BenchKind.MLP: _mlp,
    BenchKind.IDENTITY: _identity,
}


# -- the suite -------------------------------------------------------------------------------------
BATCHES = (8, 16, 32, 32, 64)  # source: our choice, around the study's batch of 32 (twice as likely)
SIDES = (2, 4, 7, 8, 14, 16, 28, 32)  # source: the feature-map sides of CIFAR- and ImageNet-sized CNNs
CHANNELS = (3, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)  # source: common CNN widths
MAX_CONV_MACS = 1.5e9  # source: our choice; the largest convolution of the CIFAR-sized zoo at batch 32
#                        is ~1.2e9 MACs, and a train step of 3x this still times in ~0.2 s here
MAX_ELEMENTS = 2**23  # source: our choice, 8 Mi floats = 32 MiB per tensor, beyond any cache here
SEED = 0  # source: our choice; the suite is the same on every machine

#: benchmarks drawn per kind: (full suite, quick suite). source: our choice, sized so that the full
#: suite times in ~2-4 minutes on 2 cores and the quick one in ~10 s.
COUNTS: dict[BenchKind, tuple[int, int]] = {
    BenchKind.CONV: (70, 6), BenchKind.GROUPED_CONV: (20, 2), BenchKind.DEPTHWISE_CONV: (25, 2),
    BenchKind.LINEAR: (25, 3), BenchKind.BATCH_NORM: (18, 2), BenchKind.ACTIVATION: (18, 2),
    BenchKind.ADD: (8, 1), BenchKind.POOL: (15, 2), BenchKind.DROPOUT: (5, 1),
    BenchKind.CONCAT: (6, 1), BenchKind.PAD: (4, 1), BenchKind.SHUFFLE: (5, 1), BenchKind.MLP: (8, 2),
    BenchKind.IDENTITY: (6, 1),
}
QUICK_MAX_ELEMENTS = 2**17  # source: our choice, small enough that the quick suite takes seconds


def _feature_map(rng: random.Random, channels: Sequence[int], max_elements: int,
                 batch: int | None = None) -> tuple[int, int, int]:
    """(batch, channels, side) with batch * channels * side^2 <= max_elements."""
    while True:
        b = batch or rng.choice(BATCHES)
        c, s = rng.choice(channels), rng.choice(SIDES)
        if b * c * s * s <= max_elements:
            return b, c, s


def _draw(kind: BenchKind, rng: random.Random, max_elements: int, max_macs: float,
          index: int) -> OpBench:
    """The ``index``-th benchmark of ``kind``: shapes drawn from ``rng``."""
    if kind in (BenchKind.CONV, BenchKind.GROUPED_CONV):
        while True:
            b, cin, s = _feature_map(rng, CHANNELS, max_elements)
            cout = rng.choice(CHANNELS[1:])
            k = rng.choice((1, 3, 3, 3, 5) if kind is BenchKind.CONV else (1, 1, 3))
            stride = 2 if rng.random() < 0.2 and s > 2 else 1
            groups = 1
            if kind is BenchKind.GROUPED_CONV:
                groups = rng.choice((2, 3, 4, 8))
                cin, cout = groups * max(1, cin // groups), groups * max(1, cout // groups)
                if cin == groups:
                    continue
            out_side = (s + stride - 1) // stride
            macs = b * cout * out_side**2 * (cin // groups) * k * k
            if macs <= max_macs and b * cout * out_side**2 <= max_elements and k <= s + 1:
                opts = {"cout": cout, "k": k, "stride": stride, "groups": groups,
                        "bias": rng.random() < 0.3}
                return OpBench(kind, b, (cin, s, s), tuple(opts.items()))
    if kind is BenchKind.DEPTHWISE_CONV:
        b, c, s = _feature_map(rng, (16, 32, 64, 96, 128, 256, 512, 1024), max_elements)
        stride = 2 if rng.random() < 0.25 and s > 2 else 1
        return OpBench(kind, b, (c, s, s), (("k", rng.choice((3, 3, 3, 5))), ("stride", stride)))
    if kind is BenchKind.LINEAR:
        while True:
            b = rng.choice((8, 16, 32, 64, 128))
            fin = rng.choice((16, 64, 120, 256, 512, 1024, 2048, 4096))
            fout = rng.choice((10, 84, 100, 256, 512, 1000, 1024, 4096))
            if b * fin * fout <= max_macs / 4 and fin * fout <= max_elements:
                return OpBench(kind, b, (fin,), (("out", fout),))
    if kind is BenchKind.IDENTITY:
        return OpBench(kind, rng.choice(BATCHES), (rng.choice((8, 64, 512)), rng.choice((1, 2, 4)),
                                                   rng.choice((1, 2, 4))))
    if kind is BenchKind.MLP:
        width = rng.choice((8, 32, 128))
        return OpBench(kind, rng.choice((8, 32)), (width,), (("depth", rng.choice((4, 8, 16, 32))),))
    b, c, s = _feature_map(rng, CHANNELS[1:], max_elements)
    if kind is BenchKind.ACTIVATION:
        return OpBench(kind, b, (c, s, s), (("fn", rng.choice(
            ("relu", "relu", "relu_inplace", "relu_inplace", "tanh", "sigmoid", "hardswish", "gelu",
             "relu6"))),))
    if kind is BenchKind.POOL:
        fn = tuple(POOLS)[index % len(POOLS)]
        s = max(s, 4)
        return OpBench(kind, b, (c, s, s), (("fn", fn),))
    if kind is BenchKind.DROPOUT:
        if rng.random() < 0.5:
            return OpBench(kind, b, (rng.choice((256, 1024, 4096)),))
    if kind is BenchKind.SHUFFLE:
        g = rng.choice((2, 3, 4, 8))
        return OpBench(kind, b, (g * max(1, c // g), s, s), (("groups", g),))
    if kind is BenchKind.PAD:
        c = max(c, 4)
    return OpBench(kind, b, (c, s, s))


def suite(*, quick: bool = False, seed: int = SEED) -> tuple[OpBench, ...]:
    """The micro-benchmarks: COUNTS of each kind, shapes drawn (seeded) from generic CNN ranges."""
    rng = random.Random(seed)
    max_elements = QUICK_MAX_ELEMENTS if quick else MAX_ELEMENTS
    max_macs = 2e7 if quick else MAX_CONV_MACS  # quick: source: ~1 ms convolutions
    benches: list[OpBench] = []
    for kind, (full, small) in COUNTS.items():
        seen: set[OpBench] = set()
        while len(seen) < (small if quick else full):
            seen.add(_draw(kind, rng, max_elements, max_macs, len(seen)))
        benches += sorted(seen, key=lambda b: b.name)
    return tuple(benches)


# -- running it ------------------------------------------------------------------------------------
BUDGET_S = 0.05  # source: our choice; per pass, >= 6 timed steps and >= 0.05 s of them
QUICK_BUDGET_S = 0.005  # source: our choice, a rough figure for tests
WARMUP = 2  # source: dnncost.study.sweep's default warm-up (oneDNN builds its kernels on the first call)
PASSES = 3  # source: our choice; three chances, minutes apart, to time each benchmark undisturbed
IDLE_BUSY = 0.12  # source: our choice; the CPUs count as idle below 12% busy (other processes)
IDLE_PROBE_S = 0.1  # source: our choice, 20 scheduler ticks of 2 CPUs at USER_HZ = 100
IDLE_RECHECK_S = 1.0  # source: our choice; probe at most once a second of work (~10% overhead)
MAX_IDLE_WAIT_S = 300.0  # source: our choice; at most 5 minutes of waiting in a whole suite


def cpu_busy(window_s: float = IDLE_PROBE_S) -> float | None:
    """Share of all CPUs busy over ``window_s`` seconds (from /proc/stat; None where there is none).
    Called while this process sleeps, it measures the other processes' load."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait
    try:
        total0, idle0 = sample()
        time.sleep(window_s)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


class IdleGate:
    """Wait, before each timing, until other processes leave the CPUs idle -- on a shared machine
    the only way to time what this machine does rather than what is left of it -- within a total
    waiting budget, after which timings go ahead regardless."""

    def __init__(self, budget_s: float = MAX_IDLE_WAIT_S) -> None:
        self.budget_s = budget_s
        self.waited_s = 0.0
        self._idle_at = -math.inf  # when the CPUs were last seen idle

    def wait(self) -> None:
        start = time.perf_counter()
        if start - self._idle_at < IDLE_RECHECK_S:
            return
        while self.waited_s + (time.perf_counter() - start) < self.budget_s:
            busy = cpu_busy()
            if busy is None or busy < IDLE_BUSY:
                self._idle_at = time.perf_counter()
                break
        self.waited_s += time.perf_counter() - start


def time_bench(bench: OpBench, mode: str, *, threads: int | None = None,
               budget_s: float = BUDGET_S, warmup: int = WARMUP,
               module: nn.Module | None = None) -> float:
    """Median step seconds of ``bench`` in ``mode`` ('eval' or 'train'), one timing run."""
    module = module or bench.build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoisyMeasurementWarning)  # passes absorb the noise
        timing = time_model(module, bench.input_shape, batch_size=bench.batch_size, mode=mode,
                            threads=threads, warmup=warmup, budget_s=budget_s, count_flops=False,
                            name=bench.name)
    return timing.measurement.median


def count_bench(bench: OpBench, mode: str) -> tuple[OpRecord, ...]:
    """The operator calls of one ``mode`` step of ``bench``, as dnncost.counting.counter lists them."""
    report = count(bench.build(), mode=mode, batch_size=bench.batch_size,
                   input_shape=bench.input_shape, name=bench.name)
    return report.records


def run_suite(benches: Iterable[OpBench], *, threads: int | None = None,
              budget_s: float = BUDGET_S, warmup: int = WARMUP, passes: int = PASSES,
              max_idle_wait_s: float = MAX_IDLE_WAIT_S, progress: bool = False) -> list[BenchResult]:
    """Time every benchmark in eval and train mode, ``passes`` times over the whole suite, and
    keep each one's fastest pass: on a shared machine another process only ever adds time, and
    passes minutes apart give each benchmark several chances at a quiet moment. Before each
    benchmark it waits for idle CPUs (:class:`IdleGate`, at most ``max_idle_wait_s`` in all)."""
    benches = list(benches)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(benches) * passes, unit="bench", desc="operator benchmarks",
                   dynamic_ncols=True)
    times: dict[tuple[int, str], list[float]] = {}
    gate = IdleGate(max_idle_wait_s)
    with using_threads(threads) as n_threads:
        _warm_up_runtime()
        for _ in range(passes):
            for i, bench in enumerate(benches):
                gate.wait()
                module = bench.build()
                for mode in ("eval", "train"):  # interleaved: drift in the load hits both alike
                    times.setdefault((i, mode), []).append(time_bench(
                        bench, mode, threads=n_threads, budget_s=budget_s, warmup=warmup,
                        module=module))
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return [BenchResult(bench, mode, min(times[i, mode]), tuple(times[i, mode]),
                        count_bench(bench, mode))
            for i, bench in enumerate(benches) for mode in ("eval", "train")]


def _warm_up_runtime() -> None:
    """Start the thread pool and oneDNN once, so that the first benchmark does not pay for it."""
    x = torch.randn(8, 16, 16, 16)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    for _ in range(3):
        conv(x).sum().backward()


__all__ = ["BUDGET_S", "BenchKind", "BenchResult", "IdleGate", "OpBench", "PASSES",
           "QUICK_BUDGET_S", "count_bench", "cpu_busy", "run_suite", "suite",
           "time_bench"]
