"""Later networks the study compares against, all from torchvision: MobileNetV2 (Sandler et al.
2018), ShuffleNetV2 (Ma et al. 2018), SqueezeNet 1.0/1.1 (Iandola et al. 2016), DenseNet-121
(Huang et al. 2017).
"""
from __future__ import annotations

from typing import Any

from dnncost.models._torchvision import torchvision_builder
from dnncost.models.registry import ModelInfo, register_model

_IMAGENET: dict[str, Any] = dict(input_shape=(3, 224, 224), num_classes=1000, size="imagenet")

register_model(ModelInfo(
    "mobilenet_v2", family="mobilenet_v2", year=2018, **_IMAGENET,
    paper="Sandler et al., MobileNetV2: Inverted residuals and linear bottlenecks",
    # source: Sandler et al. 2018, Table 4: MobileNetV2 3.4M params, 300M MAdds.
    paper_params=3_400_000, paper_macs=300_000_000, source="Sandler et al. 2018, Table 4",
    notes="torchvision counts 3.50M params, +3.1% on the paper's 3.4M (printed to 0.1M, so "
          "anything from 3.35M to 3.45M prints so); tolerance 4%.",
    params_tolerance=0.04,
))(torchvision_builder("mobilenet_v2"))

register_model(ModelInfo(
    "shufflenet_v2_x1_0", family="shufflenet_v2", year=2018, **_IMAGENET,
    paper="Ma et al., ShuffleNet V2: Practical guidelines for efficient CNN architecture design",
    # source: Ma et al. 2018, Table 5 (1x: 146M FLOPs = multiply-adds, 2.3M weights).
    paper_params=2_300_000, paper_macs=146_000_000, source="Ma et al. 2018, Table 5",
))(torchvision_builder("shufflenet_v2_x1_0"))

_SQUEEZENET = "Iandola et al., SqueezeNet: AlexNet-level accuracy with 50x fewer parameters"
register_model(ModelInfo(
    "squeezenet1_0", family="squeezenet", year=2016, **_IMAGENET, paper=_SQUEEZENET,
    # source: Iandola et al. 2016, Table 1 ("# parameter before pruning", total 1,248,424).
    paper_params=1_248_424, source="Iandola et al. 2016, Table 1",
))(torchvision_builder("squeezenet1_0"))

register_model(ModelInfo(
    "squeezenet1_1", family="squeezenet", year=2016, **_IMAGENET, paper=_SQUEEZENET,
    notes="SqueezeNet 1.1 comes from the authors' repository, not the paper: no paper figures.",
))(torchvision_builder("squeezenet1_1"))

register_model(ModelInfo(
    "densenet121", family="densenet", year=2017, **_IMAGENET,
    paper="Huang et al., Densely connected convolutional networks",
    notes="The paper prints no parameter or MAC count for DenseNet-121 (only Fig. 3's plots).",
))(torchvision_builder("densenet121"))
