"""dnncost.prediction.transfer: the hand-written standard networks every calibration times and
never fits on -- each builds, is counted with every operator covered, runs a real step, is none of
the sampler's blocks, and is sized under the calibration's FLOPs cap."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dnncost.counting.counter import count
from dnncost.prediction import sampling
from dnncost.prediction.calibration import QUICK_MAX_TRAIN_FLOPS, sized_transfer_set
from dnncost.prediction.transfer import NETWORKS, transfer_networks


def test_the_set_names_four_designs_at_two_inputs() -> None:
    names = [n.name for n in transfer_networks(larger=True)]
    assert names == [f"transfer:{k}@{side}" for side in (32, 96) for k in
                     ("plain", "bottleneck", "inverted_residual", "attention")]
    assert [n.name for n in transfer_networks(larger=False)] == names[:4]
    assert set(NETWORKS) == {"plain", "bottleneck", "inverted_residual", "attention"}


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
    sized = sized_transfer_set(max_train_flops=QUICK_MAX_TRAIN_FLOPS, larger=False)
    assert [n.name for n in sized] == [n.name for n in transfer_networks(larger=False)]
    for net in sized:
        flops = count(net.module, mode="train", batch_size=net.batch_size,
                      input_shape=net.input_shape).total().flops
        assert flops <= QUICK_MAX_TRAIN_FLOPS and 1 <= net.batch_size <= 32
    # the plain stack counts 0.32 GFLOPs a training sample at 32x32: batch 1 under 0.4 GFLOPs
    assert sized[0].batch_size == 1
    assert sized_transfer_set(max_train_flops=1e6, larger=False) == []  # none fits: none timed
