"""Counts of torchvision models against torchvision's documented figures.

torchvision's weight metadata carries each model's documented ``num_params`` and ``_ops`` (the
"GFLOPS" of its docs, which are conv/linear/matmul MACs); reading it needs no download.
"""
from __future__ import annotations

import json

import pytest
import torchvision.models as tvm

from dnncost.cli import main
from dnncost.counting.counter import count

MODELS = ["resnet50", "alexnet", "vgg16", "googlenet", "mobilenet_v2", "shufflenet_v2_x1_0",
          "vit_b_16", "resnet18", "efficientnet_b0", "convnext_tiny", "swin_t", "regnet_y_400mf"]


@pytest.mark.parametrize("name", MODELS)
def test_matches_torchvision_docs(name):
    meta = tvm.get_model_weights(name).DEFAULT.meta
    report = count(f"torchvision:{name}")
    assert report.params == meta["num_params"]
    # docs print GMACs to 3 decimals: agree to the printed precision
    assert report.total().macs / 1e9 == pytest.approx(meta["_ops"], abs=0.0051)
    assert report.unsupported() == {}


def test_resnet50_exact_figures_from_the_cli(capsys):
    # source: torchvision docs, ResNet50_Weights.IMAGENET1K_V1: 25.6M params, 4.09 GFLOPS (MACs)
    assert main(["count", "torchvision:resnet50", "--input", "3x224x224", "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["params"] == 25_557_032
    assert summary["macs"] == 4_089_184_256


@pytest.mark.parametrize("name", ["mobilenet_v2", "shufflenet_v2_x1_0"])
def test_depthwise_training_step_is_about_three_times_forward(name):
    report = count(f"torchvision:{name}", mode="train")
    fwd, bwd = report.total("forward").macs, report.total("backward").macs
    # backward = grad_input + grad_weight ~ 2 x forward (the first conv needs no grad_input);
    # torch's own formula, blind to groups, makes this ~20x
    assert bwd / fwd == pytest.approx(1.95, abs=0.05)
