"""dnncost.training.data: dataset specs, digits/synthetic in memory, local MNIST/CIFAR/ImageFolder,
errors."""
from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dnncost.core.errors import DatasetError, InputSpecError
from dnncost.training.data import DatasetKind, load_dataset, parse_dataset_spec


# -- specs ------------------------------------------------------------------------------------------
def test_parse_specs() -> None:
    assert parse_dataset_spec("digits").kind is DatasetKind.DIGITS
    spec = parse_dataset_spec("cifar10:/data/cifar")
    assert spec.kind is DatasetKind.CIFAR10 and spec.path == Path("/data/cifar")
    assert str(parse_dataset_spec("imagefolder:/x/y")) == "imagefolder:/x/y"


@pytest.mark.parametrize("spec, message", [
    ("digts", "Did you mean: digits"),
    ("cifar10", "needs a local path"),
    ("mnist:", "needs a local path"),
    ("digits:/tmp", "takes no path"),
])
def test_bad_specs_say_what_was_expected(spec: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        parse_dataset_spec(spec)


def test_non_image_input_and_bad_fraction_are_refused() -> None:
    with pytest.raises(InputSpecError, match="CxHxW"):
        load_dataset("digits", input_shape=(784,))
    with pytest.raises(DatasetError, match="between 0 and 1"):
        load_dataset("digits", input_shape=(1, 8, 8), val_fraction=1.0)


# -- digits ------------------------------------------------------------------------------------------
def test_digits_split_is_stratified_deterministic_and_normalised() -> None:
    data = load_dataset("digits", input_shape=(1, 8, 8), seed=0)
    # 1797 images; sklearn holds out ceil(0.2 * 1797) = ceil(359.4) = 360
    assert (len(data.train), len(data.val), data.num_classes) == (1437, 360, 10)
    x, y = data.train[0]
    assert x.shape == (1, 8, 8) and isinstance(y, int)
    train_x = torch.stack([data.train[i][0] for i in range(len(data.train))])
    assert train_x.mean().item() == pytest.approx(0.0, abs=1e-5)  # normalised by train statistics
    assert train_x.std().item() == pytest.approx(1.0, abs=1e-4)
    val_counts = Counter(int(data.val.labels[i]) for i in range(len(data.val)))
    assert min(val_counts.values()) >= 35 and max(val_counts.values()) <= 37  # ~36 of each digit
    again = load_dataset("digits", input_shape=(1, 8, 8), seed=0)
    assert torch.equal(again.train.labels, data.train.labels)
    other = load_dataset("digits", input_shape=(1, 8, 8), seed=1)
    assert not torch.equal(other.train.labels, data.train.labels)


def test_digits_resized_bilinear_and_channel_matched() -> None:
    data = load_dataset("digits", input_shape=(3, 32, 24))
    x, _ = data.train[5]
    assert x.shape == (3, 32, 24)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grey repeated to 3 channels
    small = data.train.images[5:6]  # (1, 1, 8, 8) in [0, 1]
    expected = torch.nn.functional.interpolate(small, size=(32, 24), mode="bilinear",
                                               align_corners=False)[0, 0]
    assert torch.allclose(x[0], (expected - data.train.mean) / data.train.std)


def test_batched_access_matches_single_items() -> None:
    data = load_dataset("digits", input_shape=(1, 16, 16))
    xb, yb = next(iter(DataLoader(data.val, batch_size=4)))  # DataLoader uses __getitems__
    for i in range(4):
        x, y = data.val[i]
        assert torch.allclose(xb[i], x, atol=1e-6) and int(yb[i]) == y


# -- synthetic ---------------------------------------------------------------------------------------
def test_synthetic_is_deterministic_and_class_structured() -> None:
    data = load_dataset("synthetic", input_shape=(2, 5, 5), seed=3)
    assert (len(data.train), len(data.val)) == (819, 205)  # 1024 samples, ceil(0.2 * 1024) = 205 held out
    x1, y1 = data.train[7]
    x2, y2 = load_dataset("synthetic", input_shape=(2, 5, 5), seed=3).train[7]
    assert x1.shape == (2, 5, 5) and y1 == y2 and torch.equal(x1, x2)
    # images of a class scatter around their prototype: the class mean is closer to it than to others
    xs = torch.stack([data.train[i][0] for i in range(200)])
    ys = torch.tensor([data.train[i][1] for i in range(200)])
    proto = data.train.prototypes
    c = int(ys[0])
    mean_c = xs[ys == c].mean(0)
    dists = [(mean_c - proto[k]).norm().item() for k in range(len(proto))]
    assert int(np.argmin(dists)) == c


# -- local datasets through torchvision -------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (MNIST's format): magic 0x0000 08 ndim, big-endian dims, then uint8 data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_mnist(root: Path, *, n_train: int = 12, n_test: int = 6) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return root


def test_local_mnist_loads_with_its_test_split_as_validation(tmp_path: Path) -> None:
    root = fake_mnist(tmp_path)
    data = load_dataset(f"mnist:{root}", input_shape=(1, 32, 32))
    assert (len(data.train), len(data.val), data.num_classes) == (12, 6, 10)
    x, y = data.train[3]
    assert x.shape == (1, 32, 32) and y == 3
    rgb = load_dataset(f"mnist:{root / 'MNIST'}", input_shape=(3, 28, 28))  # the MNIST folder works too
    assert rgb.val[0][0].shape == (3, 28, 28)


@pytest.mark.parametrize("kind, expected", [
    ("mnist", "MNIST/raw/ holding the uncompressed train-images-idx3-ubyte"),
    ("cifar10", "cifar-10-batches-py/ holding data_batch_1"),
    ("imagefolder", "one sub-folder per class"),
])
def test_missing_local_dataset_says_what_was_expected(tmp_path: Path, kind: str, expected: str) -> None:
    with pytest.raises(DatasetError, match="does not exist") as info:
        load_dataset(f"{kind}:{tmp_path / 'nowhere'}", input_shape=(3, 32, 32))
    assert expected in str(info.value) and "never downloads" in str(info.value)


def test_malformed_local_datasets_are_dataset_errors(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="does not hold the expected files"):
        load_dataset(f"cifar10:{tmp_path}", input_shape=(3, 32, 32))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="malformed"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}", input_shape=(3, 32, 32))


def test_imagefolder_is_split_stratified_and_resized(tmp_path: Path) -> None:
    from PIL import Image

    for c, colour in enumerate(("red", "blue")):
        folder = tmp_path / f"class{c}"
        folder.mkdir()
        for i in range(5):
            Image.new("RGB", (20 + i, 12), colour).save(folder / f"{i}.png")
    data = load_dataset(f"imagefolder:{tmp_path}", input_shape=(3, 16, 16), val_fraction=0.4)
    assert (len(data.train), len(data.val), data.num_classes) == (6, 4, 2)  # 2 of 5 per class held out
    assert sorted(y for _, y in data.val) == [0, 0, 1, 1]
    x, _ = data.train[0]
    assert x.shape == (3, 16, 16)
    grey = load_dataset(f"imagefolder:{tmp_path}", input_shape=(1, 8, 8), val_fraction=0.4)
    assert grey.train[0][0].shape == (1, 8, 8)
