"""Datasets to train and validate on, matched to a network's input shape.

Specs: ``digits`` (scikit-learn's bundled 8x8 handwritten digits: real data, no download -- the
offline default), ``synthetic`` (random images around one prototype per class, learnable),
``cifar10:PATH``, ``mnist:PATH`` and ``imagefolder:PATH`` (local files read through torchvision with
downloading disabled). Every dataset is resized to the network's HxW and its channels matched to C.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from dnncost.core.errors import DatasetError, InputSpecError, suggest

DIGITS_MAX_LEVEL = 16.0  # source: sklearn load_digits docs, pixels are integers 0..16
SYNTHETIC_SIZE = 1024  # source: our choice, an epoch of a CIFAR-size net in seconds on a CPU
SYNTHETIC_CLASSES = 10  # source: our choice, as many classes as digits/CIFAR-10/MNIST
SYNTHETIC_NOISE = 1.0  # source: our choice, noise std equal to the prototypes' std: learnable, not trivial
MAX_SEED = 2**32 - 1  # source: numpy/sklearn random_state range (a 32-bit unsigned seed)
NORMALISATION = {  # per-channel (mean, std) of each dataset's training images, in [0, 1] units
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),  # source: CIFAR-10 train set statistics
    "mnist": ((0.1307,), (0.3081,)),  # source: pytorch/examples mnist/main.py
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # source: torchvision ImageNet docs
}
NATIVE_SIZE = {"cifar10": (32, 32), "mnist": (28, 28)}  # source: the datasets' documentation
CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch", "batches.meta")  # source: torchvision.datasets.CIFAR10.train_list/test_list
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")  # source: torchvision.datasets.MNIST.resources, uncompressed


class DatasetKind(str, Enum):
    """The datasets ``load_dataset`` knows."""

    DIGITS = "digits"
    SYNTHETIC = "synthetic"
    CIFAR10 = "cifar10"
    MNIST = "mnist"
    IMAGEFOLDER = "imagefolder"


NEEDS_PATH = (DatasetKind.CIFAR10, DatasetKind.MNIST, DatasetKind.IMAGEFOLDER)


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec: its kind and, for local datasets, its path."""

    kind: DatasetKind
    path: Path | None = None

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.path}" if self.path else self.kind.value


@dataclass(frozen=True)
class DatasetSplit:
    """A training and a validation set of (image, label) pairs shaped for one network."""

    name: str
    train: Dataset
    val: Dataset
    num_classes: int
    input_shape: tuple[int, ...]
    description: str


def parse_dataset_spec(spec: str) -> DatasetSpec:
    """'digits' -> DIGITS; 'cifar10:/data/cifar' -> CIFAR10 with its path; DatasetError otherwise."""
    name, sep, path = spec.strip().partition(":")
    choices = [k.value for k in DatasetKind]
    try:
        kind = DatasetKind(name.lower())
    except ValueError:
        raise DatasetError(
            f"unknown dataset '{spec}'.{suggest(name, choices)} Expected one of: digits, synthetic, "
            "cifar10:PATH, mnist:PATH, imagefolder:PATH") from None
    if kind in NEEDS_PATH and not path:
        raise DatasetError(f"dataset '{kind.value}' needs a local path: write {kind.value}:PATH "
                           "(nothing is downloaded)")
    if kind not in NEEDS_PATH and sep:
        raise DatasetError(f"dataset '{kind.value}' takes no path (got '{spec}')")
    return DatasetSpec(kind, Path(path).expanduser() if path else None)


def load_dataset(spec: str | DatasetSpec, *, input_shape: Sequence[int], val_fraction: float = 0.2,
                 seed: int = 0) -> DatasetSplit:
    """Load ``spec`` as training and validation sets of ``input_shape`` (C, H, W) images.

    digits, synthetic and imagefolder are split deterministically (stratified, ``seed``) with
    ``val_fraction`` held out; CIFAR-10 and MNIST validate on their official test split.
    """
    spec = parse_dataset_spec(spec) if isinstance(spec, str) else spec
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or any(s <= 0 for s in shape):
        raise InputSpecError(f"dataset '{spec}' gives images, so the network's input must be CxHxW; "
                             f"got {'x'.join(map(str, shape)) or 'nothing'}")
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val fraction must lie strictly between 0 and 1, got {val_fraction}")
    if not 0 <= seed <= MAX_SEED:
        raise DatasetError(f"seed must be an integer from 0 to {MAX_SEED}, got {seed}")
    if spec.kind is DatasetKind.DIGITS:
        return _digits(shape, val_fraction=val_fraction, seed=seed)
    if spec.kind is DatasetKind.SYNTHETIC:
        return _synthetic(shape, val_fraction=val_fraction, seed=seed)
    assert spec.path is not None
    if spec.kind is DatasetKind.CIFAR10:
        return _cifar10(spec.path, shape)
    if spec.kind is DatasetKind.MNIST:
        return _mnist(spec.path, shape)
    return _imagefolder(spec.path, shape, val_fraction=val_fraction, seed=seed)


def stratified_split(labels: Sequence[int] | np.ndarray, *, val_fraction: float,
                     seed: int) -> tuple[list[int], list[int]]:
    """Deterministic stratified (train indices, validation indices) via sklearn's train_test_split."""
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    try:
        train, val = train_test_split(np.arange(len(labels)), test_size=val_fraction,
                                      stratify=labels, random_state=seed)
    except ValueError as exc:
        raise DatasetError(f"cannot split {len(labels)} samples of {len(np.unique(labels))} classes "
                           f"with val fraction {val_fraction}: {exc}") from exc
    return sorted(train.tolist()), sorted(val.tolist())


# -- in-memory datasets ------------------------------------------------------------------------------
class ResizedImages(Dataset):
    """Small grey images resized (bilinear) to (C, H, W) and normalised on access, a batch at a time.

    ``images`` is (N, 1, h, w) in [0, 1]; ``mean``/``std`` normalise after resizing.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, shape: tuple[int, int, int],
                 mean: float, std: float) -> None:
        self.images, self.labels, self.shape = images, labels, shape
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def _batch(self, index: list[int]) -> torch.Tensor:
        c, h, w = self.shape
        x = self.images[index]  # (B, 1, h0, w0)
        if x.shape[-2:] != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)  # (B, 1, H, W)
        return ((x - self.mean) / self.std).expand(-1, c, -1, -1).contiguous()  # (B, C, H, W)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self._batch([i])[0], int(self.labels[i])

    def __getitems__(self, index: list[int]) -> list[tuple[torch.Tensor, int]]:
        """Batched access (DataLoader uses it): one interpolate call per batch, not per image."""
        return list(zip(self._batch(index).unbind(0), self.labels[index].tolist(), strict=True))


def _digits(shape: tuple[int, int, int], *, val_fraction: float, seed: int) -> DatasetSplit:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().unsqueeze(1) / DIGITS_MAX_LEVEL  # (1797, 1, 8, 8)
    labels = torch.from_numpy(digits.target).long()
    train_idx, val_idx = stratified_split(digits.target, val_fraction=val_fraction, seed=seed)
    mean, std = images[train_idx].mean().item(), images[train_idx].std().item()  # train-set stats only

    def part(idx: list[int]) -> ResizedImages:
        return ResizedImages(images[idx], labels[idx], shape=shape, mean=mean, std=std)

    return DatasetSplit(
        "digits", part(train_idx), part(val_idx), 10, shape,
        f"scikit-learn digits: {len(train_idx)} train / {len(val_idx)} val 8x8 grey images, "
        f"10 classes, resized bilinear to {shape[1]}x{shape[2]} x{shape[0]} channels "
        f"(stratified split, seed {seed})")


class SyntheticImages(Dataset):
    """Random images around one random prototype per class: learnable, deterministic per index."""

    def __init__(self, labels: torch.Tensor, prototypes: torch.Tensor, *, seed: int,
                 indices: Sequence[int]) -> None:
        self.labels, self.prototypes, self.seed, self.indices = labels, prototypes, seed, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        k = self.indices[i]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + k)  # a distinct stream per sample
        y = int(self.labels[k])
        noise = torch.randn(self.prototypes.shape[1:], generator=gen)
        return self.prototypes[y] + SYNTHETIC_NOISE * noise, y


def _synthetic(shape: tuple[int, int, int], *, val_fraction: float, seed: int) -> DatasetSplit:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(SYNTHETIC_CLASSES, (SYNTHETIC_SIZE,), generator=gen)
    prototypes = torch.randn(SYNTHETIC_CLASSES, *shape, generator=gen)  # (classes, C, H, W)
    train_idx, val_idx = stratified_split(labels.numpy(), val_fraction=val_fraction, seed=seed)
    return DatasetSplit(
        "synthetic",
        SyntheticImages(labels, prototypes, seed=seed, indices=train_idx),
        SyntheticImages(labels, prototypes, seed=seed, indices=val_idx),
        SYNTHETIC_CLASSES, shape,
        f"synthetic: {len(train_idx)} train / {len(val_idx)} val random {'x'.join(map(str, shape))} "
        f"images around {SYNTHETIC_CLASSES} class prototypes (seed {seed})")


# -- local datasets through torchvision ----------------------------------------------------------------
class _Convert:
    """PIL image -> mode 'L' or 'RGB' (picklable, so DataLoader workers can use it)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image):
        return image.convert(self.mode)


class _RepeatChannels:
    """(1, H, W) -> (C, H, W) for networks with neither 1 nor 3 input channels."""

    def __init__(self, channels: int) -> None:
        self.channels = channels

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(self.channels, -1, -1).contiguous()


def _transform(dataset: str, shape: tuple[int, int, int], *, resize: bool):
    """PIL -> tensor of ``shape``: channel mode, resize (bilinear), to [0, 1], normalise."""
    from torchvision import transforms as T

    c, h, w = shape
    mean, std = NORMALISATION[dataset]
    mode = "RGB" if c == 3 else "L"
    if mode == "L" and len(mean) == 3:  # grey from colour: one statistic for the one channel
        mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    if mode == "RGB" and len(mean) == 1:  # colour from grey: the same statistic for each channel
        mean, std = mean * 3, std * 3
    steps: list[Callable[[Any], Any]] = [_Convert(mode)]
    if resize:
        steps.append(T.Resize((h, w), interpolation=T.InterpolationMode.BILINEAR, antialias=True))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if c not in (1, 3):
        steps.append(_RepeatChannels(c))
    return T.Compose(steps)


def _missing(kind: str, path: Path, expected: str) -> DatasetError:
    where = "does not exist" if not path.exists() else "does not hold the expected files"
    return DatasetError(f"{kind} path '{path}' {where}: expected {expected}. "
                        "dnncost never downloads; fetch the dataset and point at it")


def _cifar10(path: Path, shape: tuple[int, int, int]) -> DatasetSplit:
    from torchvision.datasets import CIFAR10

    expected = (f"{path}/cifar-10-batches-py/ holding {', '.join(CIFAR10_FILES)} (the extracted "
                "'CIFAR-10 python version' archive)")
    root = path.parent if path.name == "cifar-10-batches-py" else path
    transform = _transform("cifar10", shape, resize=shape[1:] != NATIVE_SIZE["cifar10"])
    try:
        train = CIFAR10(str(root), train=True, transform=transform, download=False)
        val = CIFAR10(str(root), train=False, transform=transform, download=False)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:  # torchvision: "not found or corrupted"
        raise _missing("cifar10", path, expected) from exc
    return DatasetSplit("cifar10", train, val, 10, shape,
                        f"CIFAR-10 at {root}: {len(train)} train / {len(val)} test (as validation) "
                        f"images, 10 classes, as {'x'.join(map(str, shape))}")


def _mnist(path: Path, shape: tuple[int, int, int]) -> DatasetSplit:
    from torchvision.datasets import MNIST

    expected = (f"{path}/MNIST/raw/ holding the uncompressed {', '.join(MNIST_FILES)} "
                "(torchvision's MNIST layout)")
    if path.name == "raw" and path.parent.name == "MNIST":
        root = path.parent.parent
    elif path.name == "MNIST":
        root = path.parent
    else:
        root = path
    transform = _transform("mnist", shape, resize=shape[1:] != NATIVE_SIZE["mnist"])
    try:
        train = MNIST(str(root), train=True, transform=transform, download=False)
        val = MNIST(str(root), train=False, transform=transform, download=False)
    except (RuntimeError, OSError, ValueError) as exc:  # torchvision: "Dataset not found" / bad magic
        raise _missing("mnist", path, expected) from exc
    return DatasetSplit("mnist", train, val, 10, shape,
                        f"MNIST at {root}: {len(train)} train / {len(val)} test (as validation) "
                        f"images, 10 classes, as {'x'.join(map(str, shape))}")


def _imagefolder(path: Path, shape: tuple[int, int, int], *, val_fraction: float,
                 seed: int) -> DatasetSplit:
    from torchvision.datasets import ImageFolder

    expected = f"one sub-folder per class under {path}, each holding image files (PATH/CLASS/IMAGE.png)"
    if not path.is_dir():
        raise _missing("imagefolder", path, expected)
    try:
        full = ImageFolder(str(path), transform=_transform("imagefolder", shape, resize=True))
    except (FileNotFoundError, RuntimeError, OSError) as exc:  # no class folders / no valid images
        raise DatasetError(f"imagefolder path '{path}' is malformed ({exc}): expected {expected}") from exc
    train_idx, val_idx = stratified_split(full.targets, val_fraction=val_fraction, seed=seed)
    return DatasetSplit(
        "imagefolder", Subset(full, train_idx), Subset(full, val_idx), len(full.classes), shape,
        f"image folder {path}: {len(train_idx)} train / {len(val_idx)} val images, "
        f"{len(full.classes)} classes, resized to {'x'.join(map(str, shape))} (stratified, seed {seed})")


__all__ = ["DatasetKind", "DatasetSpec", "DatasetSplit", "ResizedImages", "SyntheticImages",
           "load_dataset", "parse_dataset_spec", "stratified_split"]
