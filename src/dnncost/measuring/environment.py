"""The environment every result carries, so that results from different runs can be compared."""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch


@dataclass(frozen=True)
class Environment:
    """Where and with what a result was produced."""

    dnncost_version: str
    git_revision: str
    python: str
    torch_version: str
    torch_build: str
    torchvision_version: str
    platform: str
    cpu_model: str
    cpu_cores: int
    threads: int
    device: str
    device_name: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def git_revision() -> str:
    """The git revision of the dnncost source tree, or 'unknown' outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: torch.device | str) -> str:
    """Human name of a device: the GPU's model for CUDA, the CPU's model otherwise."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    if device.type == "meta":
        return "meta (no arithmetic)"
    return cpu_model()


def current_environment(device: torch.device | str = "cpu", *, threads: int | None = None) -> Environment:
    """Snapshot of the software, hardware and thread count in force now."""
    from dnncost import __version__

    try:
        import torchvision
        tv_version = torchvision.__version__
    except Exception:  # torchvision may be absent or broken beside some torch builds
        tv_version = "unavailable"
    build = "cuda " + torch.version.cuda if torch.version.cuda else "cpu"
    return Environment(
        dnncost_version=__version__,
        git_revision=git_revision(),
        python=platform.python_version(),
        torch_version=torch.__version__,
        torch_build=build,
        torchvision_version=tv_version,
        platform=platform.platform(),
        cpu_model=cpu_model(),
        cpu_cores=os.cpu_count() or 1,
        threads=threads if threads is not None else torch.get_num_threads(),
        device=str(torch.device(device)),
        device_name=device_name(device),
    )


def machine_fingerprint(device: torch.device | str = "cpu", *, threads: int | None = None) -> str:
    """A short stable key for 'this machine, this device, this thread count, this torch'.

    Results and calibrations are keyed by it: same hardware and software give the same key.
    """
    env = current_environment(device, threads=threads)
    key = "|".join([env.cpu_model, str(env.cpu_cores), env.device_name, str(env.threads),
                    env.torch_version, platform.machine()])
    return hashlib.sha256(key.encode()).hexdigest()[:16]
