"""dnncost.prediction.transfer: the hand-written standard networks every calibration times and
never fits on -- each builds, is counted with every operator covered, runs a real step, is none of
the sampler's blocks, and is sized under the calibration's FLOPs cap."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dnncost.counting.counter import count
from dnncost.prediction import sampling
from dnncost.prediction.calibration import QUICK_TRANSFER, sized_transfer_set
from dnncost.prediction.transfer import NETWORKS, transfer_networks

SMALL_CAP = 4e8  # a tenth of calibration.MAX_TRAIN_FLOPS: some networks fit only at batch 1
DESIGNS = ("plain", "bottleneck", "inverted_residual", "attention", "mbconv", "grouped_bottleneck")


def test_the_set_names_six_designs_at_two_inputs() -> None:
    names = [n.name for n in transfer_networks(larger=True)]
    assert names == [f"transfer:{k}@{side}" for side in (32, 96) for k in DESIGNS]
    assert [n.name for n in transfer_networks(larger=False)] == names[:len(DESIGNS)]
    assert set(NETWORKS) == set(DESIGNS)


def test_the_late_stages_reach_a_one_pixel_map_at_the_cifar_size() -> None:
    """mbconv's 5x5 depthwise and grouped_bottleneck's 1x1 convolution from 1024 channels run on a
    1x1 map at 32x32, where real ImageNet networks run at CIFAR sizes leave oneDNN's fast kernels."""
    nets = {n.name: n for n in transfer_networks(larger=False)}
    for name, channels, kernel in (("transfer:mbconv@32", 1152, 5),
                                   ("transfer:grouped_bottleneck@32", 1024, 1)):
        report = count(nets[name].module, mode="eval", batch_size=2, input_shape=(3, 32, 32))
        assert any(r.op == "aten.convolution" and r.shapes[0][1:] == (channels, 1, 1)
                   and r.shapes[1][-1] == kernel for r in report.records), name


@pytest.mark.parametrize("net", transfer_networks(larger=True), ids=lambda n: n.name)
def test_every_standard_network_is_counted_whole(net) -> None:  # noqa: ANN001
    report = count(net.module, mode="train", batch_size=2, input_shape=net.input_shape)
    assert report.records and not report.unsupported()


def test_a_real_training_step_runs_and_the_weights_are_seeded() -> None:
    for net in transfer_networks(larger=False):
        out = net.module(torch.randn(2, *net.input_shape))
        out.sum().backward()
        assert out.shape == (2, 10)
    first, again = transfer_networks(larger=False)[0], transfer_networks(larger=False)[0]
    assert all(torch.equal(p, q) for p, q in zip(first.module.parameters(),
                                                  again.module.parameters(), strict=True))


def test_none_is_drawn_from_the_sampler() -> None:
    """Not the calibration's own distribution: no module of the set comes from the sampler."""
    for net in transfer_networks(larger=True):
        from_sampler = [type(m).__name__ for m in net.module.modules()
                        if type(m).__module__ == sampling.__name__]
        assert from_sampler == [], f"{net.name} uses the sampler's {from_sampler}"
        assert any(isinstance(m, nn.Conv2d) for m in net.module.modules())


def test_each_is_sized_under_the_flops_cap() -> None:
    every = sized_transfer_set(max_train_flops=SMALL_CAP, larger=False)
    # grouped_bottleneck fits this cap only at batch 1, where its batch norm on a 1x1 map
    # cannot train: left out, not timed to fail
    assert [n.name for n in every] == [n.name for n in transfer_networks(larger=False)
                                       if n.name != "transfer:grouped_bottleneck@32"]
    sized = sized_transfer_set(max_train_flops=SMALL_CAP, larger=False,
                               designs=QUICK_TRANSFER)  # the designs a quick calibration times
    assert [n.name for n in sized] == [f"transfer:{d}@32" for d in QUICK_TRANSFER]
    for net in sized:
        flops = count(net.module, mode="train", batch_size=net.batch_size,
                      input_shape=net.input_shape).total().flops
        assert flops <= SMALL_CAP and 1 <= net.batch_size <= 32
    # the plain stack counts 0.32 GFLOPs a training sample at 32x32: batch 1 under 0.4 GFLOPs
    assert sized[0].batch_size == 1
    assert sized_transfer_set(max_train_flops=1e6, larger=False) == []  # none fits: none timed
