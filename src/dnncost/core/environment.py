"""The environment every result carries, so that results from different runs can be compared.

:class:`Environment` is the software and hardware; :class:`MachineLoad` is how busy the machine was
while a run was timed (load average, CPU steal, CPU frequency, other processes' share of the CPU),
read from Linux's /proc and /sys between :func:`cpu_times` snapshots (None elsewhere).
"""
from __future__ import annotations

import glob
import hashlib
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch

from dnncost.core.version import __version__


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

    Results and calibrations are keyed by it: same hardware and software give the same key. Reads
    only those (no torchvision import, no git call), so it is cheap and warns about nothing.
    """
    n_threads = threads if threads is not None else torch.get_num_threads()
    key = "|".join([cpu_model(), str(os.cpu_count() or 1), device_name(device), str(n_threads),
                    torch.__version__, platform.machine()])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


# -- how busy the machine was during a run ----------------------------------------------------------
BUSY_MARGIN = 0.10  # source: NOISE_THRESHOLD's 10%, as a share of the machine's cores
STEAL_BUSY = 0.05  # source: our choice; cloud guidance reads sustained steal above a few percent
# as a noisy neighbour on the VM host (the target CV is 3%)


@dataclass(frozen=True)
class CpuTimes:
    """A snapshot of the CPU time counters (clock ticks since boot) from /proc/stat and
    /proc/self/stat: the whole machine's busy, steal and total time, and this process's own."""

    total: int  # every state of every CPU
    busy: int  # user + nice + system + irq + softirq (guest time is inside user)
    steal: int  # time the hypervisor gave this VM's CPUs to someone else
    own: int  # this process's user + system time, all its threads


def cpu_times() -> CpuTimes | None:
    """The CPU time counters now; None where /proc is not readable (not Linux)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        own_stat = Path("/proc/self/stat").read_text()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu":
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    rest = own_stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    utime, stime = int(rest[11]), int(rest[12])  # proc(5) fields 14 and 15
    return CpuTimes(total=user + nice + system + idle + iowait + irq + softirq + steal,
                    busy=user + nice + system + irq + softirq, steal=steal, own=utime + stime)


def cpu_frequency_mhz() -> float | None:
    """The mean current frequency of the CPUs (MHz): cpufreq's scaling_cur_freq where the kernel
    exposes it, else /proc/cpuinfo's 'cpu MHz'; None where neither is readable."""
    values = []
    for path in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"):
        try:
            values.append(int(Path(path).read_text()) / 1e3)  # kHz -> MHz
        except (OSError, ValueError):
            continue
    if not values:
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.lower().startswith("cpu mhz"):
                    values.append(float(line.split(":", 1)[1]))
        except (OSError, ValueError):
            return None
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class MachineLoad:
    """How busy the machine was while a run was timed. Shares are of the whole machine's CPU time
    (all cores) between two :class:`CpuTimes` snapshots; None where not readable. The counters
    tick at USER_HZ (100 per second on Linux), so the shares are coarse for runs under ~1 s."""

    load_average: float | None  # 1-minute load average at the end (it counts this process too)
    steal_share: float | None
    others_share: float | None  # every other process's CPU time (this one's children included)
    cpu_mhz: float | None
    cores: int
    threads: int  # the run's own threads

    @property
    def others_cores(self) -> float | None:
        """Other processes' CPU use in cores (others_share x cores)."""
        return None if self.others_share is None else self.others_share * self.cores

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the machine counts as busy (empty: it was not): other processes kept busy more
        cores than the run's threads left free (plus BUSY_MARGIN of the machine), or the
        hypervisor stole more than STEAL_BUSY of the CPU time."""
        reasons = []
        others = self.others_cores
        free = max(self.cores - self.threads, 0)
        if others is not None and others > free + BUSY_MARGIN * self.cores:
            reasons.append(f"other processes used {others:.1f} of {self.cores} cores while "
                           f"{self.threads} thread(s) were timed")
        if self.steal_share is not None and self.steal_share > STEAL_BUSY:
            reasons.append(f"the hypervisor stole {self.steal_share:.0%} of the CPU time")
        return tuple(reasons)

    @property
    def busy(self) -> bool:
        return bool(self.reasons)

    def describe(self) -> str:
        """One line for a person: load average, other processes' cores, steal and CPU MHz,
        each where readable ('unknown' when none is)."""
        parts = []
        if self.load_average is not None:
            parts.append(f"load average {self.load_average:.2f}")
        if self.others_cores is not None:
            parts.append(f"other processes {self.others_cores:.2f} of {self.cores} cores")
        if self.steal_share is not None:
            parts.append(f"steal {self.steal_share:.1%}")
        if self.cpu_mhz is not None:
            parts.append(f"CPU {self.cpu_mhz:.0f} MHz")
        return ", ".join(parts) or "unknown"

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "busy": self.busy, "reasons": list(self.reasons)}


def machine_load(before: CpuTimes | None, after: CpuTimes | None, *, threads: int) -> MachineLoad:
    """The machine's load between two :func:`cpu_times` snapshots taken around a run."""
    steal = others = None
    if before is not None and after is not None and after.total > before.total:
        total = after.total - before.total
        steal = (after.steal - before.steal) / total
        others = max(0, (after.busy - before.busy) - (after.own - before.own)) / total
    try:
        load: float | None = os.getloadavg()[0]
    except OSError:
        load = None
    return MachineLoad(load_average=load, steal_share=steal, others_share=others,
                       cpu_mhz=cpu_frequency_mhz(), cores=os.cpu_count() or 1, threads=threads)
