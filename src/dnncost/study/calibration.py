"""The machine's calibration as a study takes it: the peak its results are set against, and the
per-kernel time model that predicts its networks -- the one `dnncost calibrate --ops` stored, or a
quick one the study fits around its own input configuration."""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from dnncost.core.errors import OutputError
from dnncost.prediction.calibration import Focus
from dnncost.study.config import StudyConfig

if TYPE_CHECKING:
    import torch

    from dnncost.study.store import Store


def machine_calibration(store: Store, fingerprint: str, device: torch.device, threads: int
                        ) -> tuple[float | None, float | None, str | None, dict[str, object] | None]:
    """(peak FLOP/s, bandwidth, where from, per-operator model): the cached `dnncost calibrate`
    result, else the peak this store already holds for the machine (so resumed results keep one
    reference), else a calibration measured now (not saved to the cache). A cached calibration
    without the float32 convolution benchmark (older files, or one holding only a per-operator
    model) does not give the peak: a matmul alone understated it (issue 13). An unreadable cached
    calibration is warned about and ignored (dnncost.measuring.calibrate.cached_calibration).
    The per-operator model is the one in the cached calibration (None: it has none, or one that
    cannot be read, which is warned about; the store then keeps what it held)."""
    from dnncost.measuring.calibrate import cached_calibration, calibrate
    from dnncost.prediction.errors import NotCalibratedError
    from dnncost.prediction.storage import model_in

    cal = cached_calibration(device, threads=threads)
    operator_model = None
    try:
        model = model_in(cal) if cal is not None else None
        operator_model = model.to_dict() if model is not None else None
    except NotCalibratedError as exc:  # optional: the measurements stand without it
        warnings.warn(f"{exc}; the study goes on without it", stacklevel=2)
    if cal is not None and "float32" in cal.conv:
        source = f"dnncost calibrate, {cal.created}"
    else:
        stored = store.environment(fingerprint)
        if stored is not None and stored.peak_flops_per_s is not None:
            return (stored.peak_flops_per_s, stored.bandwidth_bytes_per_s, stored.calibration,
                    operator_model)
        cal = calibrate(device, threads=threads)
        source = f"measured by the study after its timings, {cal.created}"
    return (cal.peak_flops_per_s("float32"),
            cal.bandwidth.bytes_per_s if cal.bandwidth else None, source, operator_model)


def study_focus(config: StudyConfig) -> Focus | None:
    """The input side and batch the study's networks share, for the quick calibration to draw
    around; None when each network keeps its own input."""
    if config.input_size is None:
        return None
    return Focus((3, config.input_size, config.input_size), config.batch_size)


def fit_quick_model(threads: int, focus: Focus | None, *, budget_s: float | None = None,
                    min_networks: int | None = None) -> dict[str, object]:
    """A quick per-operator time model of this machine (dnncost.prediction.calibration, within
    `dnncost calibrate --ops --quick`'s budget, or ``budget_s``), drawn around ``focus``, saved to
    its calibration cache like `dnncost calibrate --ops --quick` and returned for the store: the
    report's predicted-vs-measured section then exists in every default run, marked quick.

    It is drawn in a fresh process (spawned, and killed by the kernel if this one dies), as
    `dnncost calibrate` draws it, not in the study's: drawn in a process that had just trained
    networks, the same calibration timed its networks slower and predicted the zoo's steps
    1.12-1.16x (training) and 1.36-1.47x (validation) their time, against 0.94-0.99x and
    1.21-1.24x drawn in a fresh one (source: measured, two draws each, 2-core Xeon, torch 2.14;
    the study's own run: 28.5% / 73.2% MAPE, every validation step too slow)."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from dnncost.distributed.orphans import die_with_parent
    from dnncost.prediction.model import OperatorModel
    from dnncost.prediction.storage import save_operator_model

    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            data = pool.submit(_quick_model_data, threads, focus, budget_s, min_networks).result()
    except (BrokenProcessPool, OSError) as exc:  # no child could run it: a script without `if
        # __name__ == "__main__":` (spawn imports it again), a sandbox that forbids processes
        warnings.warn(f"the quick calibration could not run in a fresh process ({exc}); it is "
                      "drawn in the study's own", stacklevel=2)
        data = _quick_model_data(threads, focus, budget_s, min_networks)
    model = OperatorModel.from_dict(data)  # plain data back from the child, checked as if read
    try:
        save_operator_model(model)
    except OutputError as exc:  # the store keeps the model all the same
        warnings.warn(f"{exc}; the per-operator time model is kept in the study's database only",
                      stacklevel=2)
    return model.to_dict()


def _quick_model_data(threads: int, focus: Focus | None, budget_s: float | None,
                      min_networks: int | None) -> dict[str, object]:
    """The quick calibration, in the spawned process: its model as plain data."""
    from dnncost.prediction.calibration import calibrate_operators

    return calibrate_operators(threads=threads, quick=True, focus=focus, budget_s=budget_s,
                               min_networks=min_networks).model.to_dict()


__all__ = ["fit_quick_model", "machine_calibration", "study_focus"]
