"""One pass over dnncost's CUDA paths, for a machine with an NVIDIA GPU.

Run:  python benchmarks/gpu_check.py            (then: pytest -m gpu)

Counts on GPU tensors (must equal the meta-device count, MHA fast path included), times train and
eval steps with CUDA synchronisation, calibrates the GPU, trains LeNet-5 on digits, profiles a
breakdown and runs data-parallel timing with nccl on one process. Prints what it saw.
"""
from __future__ import annotations

import time
import traceback
from collections.abc import Callable

import torch


def _section(title: str, fn: Callable[[], None]) -> None:
    print(f"\n== {title}", flush=True)
    start = time.perf_counter()
    try:
        fn()
    except Exception:  # report and go on: one broken path must not hide the others
        traceback.print_exc()
    print(f"   ({time.perf_counter() - start:.1f} s)", flush=True)


def counting() -> None:
    from dnncost.counting.counter import count

    for name, mode in (("torchvision:resnet50", "eval"), ("torchvision:resnet50", "train"),
                       ("torchvision:vit_b_16", "eval"), ("mobilenet_v1", "train")):
        meta = count(name, mode=mode, batch_size=8)
        cuda = count(name, mode=mode, batch_size=8, device="cuda")
        same = meta.total() == cuda.total()
        print(f"   {name:22s} {mode:5s} MACs meta {meta.total().macs:,} cuda {cuda.total().macs:,} "
              f"equal={same} unsupported(cuda)={cuda.unsupported()}")


def timing() -> None:
    from dnncost.measuring.timing import time_model
    from dnncost.models.loading import load_model

    for name, batch in (("torchvision:resnet50", 64), ("resnet20", 128), ("vgg11_cifar", 128)):
        loaded = load_model(name)
        for mode in ("train", "eval"):
            t = time_model(loaded.module, loaded.input_shape, batch_size=batch, mode=mode,
                           device="cuda", steps=20)
            m = t.measurement
            print(f"   {name:22s} {mode:5s} batch {batch}: median {m.median * 1e3:.2f} ms "
                  f"IQR {m.iqr * 1e3:.2f} ms CV {m.cv:.3f} peak mem "
                  f"{t.peak_memory_bytes / 2**20:.0f} MiB row={t.to_row()}")


def calibration() -> None:
    from dnncost.measuring.calibrate import calibrate

    cal = calibrate("cuda", dtypes=("float32", "bfloat16"))
    print(f"   {cal}")


def training() -> None:
    from dnncost.models import create_model, get_model_info
    from dnncost.training.data import load_dataset
    from dnncost.training.trainer import TrainOptions, train

    info = get_model_info("lenet5")
    data = load_dataset("digits", input_shape=info.input_shape)
    result = train(create_model("lenet5"), data, options=TrainOptions(epochs=10, device="cuda"),
                   progress=False)
    for epoch in result.epochs:
        print(f"   {epoch}")


def breakdown() -> None:
    from dnncost.measuring.breakdown import profile_breakdown
    from dnncost.models import create_model

    b = profile_breakdown(create_model("resnet20"), (3, 32, 32), batch_size=128, device="cuda")
    print(f"   {b}"[:3000])


def data_parallel() -> None:
    from dnncost.distributed.data_parallel import measure_distributed
    from dnncost.distributed.launch import GroupOptions

    t = measure_distributed("resnet20", (3, 32, 32), nproc=1, group=GroupOptions("nccl"), device="cuda",
                            batch_size=128)
    print(f"   {t.to_row()}")


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA device: run this on a machine with an NVIDIA GPU"
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    for title, fn in (("counting on GPU tensors", counting), ("step timing (CUDA sync)", timing),
                      ("calibration", calibration), ("training LeNet-5 on digits", training),
                      ("breakdown (profiler)", breakdown), ("data-parallel, nccl, 1 process",
                                                            data_parallel)):
        _section(title, fn)


if __name__ == "__main__":
    main()
