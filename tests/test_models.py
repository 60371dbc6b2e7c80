"""The zoo: every registered network builds, runs, and counts what its paper prints.

Counting uses dnncost's counter on the meta device (no arithmetic), so every network, however big,
is checked against its paper in well under a second; the real CPU forward pass of the biggest
ImageNet networks is marked slow.
"""
from __future__ import annotations

import dataclasses
from functools import cache

import pytest
import torch
import torchvision

from dnncost.core.errors import ModelNotFoundError
from dnncost.counting.counter import count
from dnncost.models import (
    FAMILIES,
    STUDY_FAMILIES,
    ModelInfo,
    create_model,
    default_study_models,
    get_model_info,
    list_models,
    register_model,
)
from dnncost.models.registry import DEFAULT_TOLERANCE
from dnncost.models.resnet import ResNetCifar

ALL = list_models()
# Real forward passes over ~2 GMACs or ~130M parameters take seconds each on a 2-core CPU.
SLOW_FORWARD = {"resnet34", "resnet50", "resnet101", "resnet152", "densenet121",
                *list_models("vgg*", size="imagenet")}


@cache
def counted(name: str, input_shape: tuple[int, ...] | None = None, **kwargs) -> tuple[int, int]:
    """(params, MACs) of zoo model ``name`` at batch 1, built and counted on the meta device."""
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    shape = input_shape or get_model_info(name).input_shape
    macs = count(model, input_shape=shape, batch_size=1).total().macs
    return sum(p.numel() for p in model.parameters()), macs


def relative_diff(value: int, reference: int) -> float:
    return value / reference - 1


# --- the registry -------------------------------------------------------------------------------

def test_the_names_others_rely_on_are_registered():
    expected = {
        "lenet5", "lenet5_partial", "alexnet", "alexnet_2012", "googlenet",
        *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
        *(f"resnet{d}" for d in (18, 34, 50, 101, 152, 20, 32, 44, 56, 110)),
        "mobilenet_v1", "mobilenet_v1_x0_75", "mobilenet_v1_x0_5", "mobilenet_v1_x0_25",
        *(f"shufflenet_v1_g{g}" for g in (1, 2, 3, 4, 8)),
        "shufflenet_v1_g3_x0_5", "shufflenet_v1_g3_x1_5", "shufflenet_v1_g3_x2_0",
        "mobilenet_v2", "shufflenet_v2_x1_0", "squeezenet1_0", "squeezenet1_1", "densenet121",
        "alexnet_cifar", "vgg11_cifar", "vgg16_cifar", "googlenet_cifar", "mobilenet_v1_cifar",
        "shufflenet_v1_g3_cifar",
    }
    assert expected <= set(ALL)


def test_every_study_family_has_imagenet_and_small_forms():
    for family in STUDY_FAMILIES:
        sizes = {get_model_info(n).size for n in list_models(family=family)}
        assert sizes == ({"mnist"} if family == "lenet" else {"imagenet", "cifar"}), family


def test_list_models_filters():
    assert list_models("resnet1*", size="cifar") == ["resnet110", "resnet18_cifar"]
    assert list_models(family="mobilenet", size="imagenet") == [
        "mobilenet_v1", "mobilenet_v1_x0_25", "mobilenet_v1_x0_5", "mobilenet_v1_x0_75"]
    assert set(list_models(heavy=True)) < set(list_models(size="cifar"))
    assert all(get_model_info(n).family in FAMILIES for n in ALL)
    with pytest.raises(ModelNotFoundError, match="unknown model family 'resnt'.*resnet"):
        list_models(family="resnt")
    with pytest.raises(ModelNotFoundError, match="unknown model size"):
        list_models(size="tiny")


def test_default_study_set_is_small_light_and_covers_the_seven_families():
    names = default_study_models()
    infos = [get_model_info(n) for n in names]
    assert names[0] == "lenet5" and 12 <= len(names) <= 14  # issue 13: at least 12
    assert {i.family for i in infos} == set(STUDY_FAMILIES)
    assert all(not i.heavy for i in infos)
    per_family = {f: sum(i.family == f for i in infos) for f in STUDY_FAMILIES}
    # depth/width variants inside families: ResNet-20/32/56, VGG-11/16, MobileNet at two widths,
    # ShuffleNet at two group counts
    assert per_family == {"lenet": 1, "alexnet": 1, "vgg": 2, "googlenet": 1, "resnet": 3,
                          "mobilenet": 2, "shufflenet": 2}
    for info in infos[1:]:
        assert info.input_shape == (3, 32, 32) and info.num_classes == 10 and info.size == "cifar"


def test_duplicate_and_unexplained_exceptions_are_refused():
    cifar = dict(paper="p", input_shape=(3, 32, 32), num_classes=10, size="cifar")
    with pytest.raises(ValueError, match="already registered"):
        register_model(ModelInfo("resnet18", family="resnet", year=2016, **cifar))(
            lambda **kw: torch.nn.Identity())
    with pytest.raises(ValueError, match="needs its reason in notes"):
        register_model(ModelInfo("zz_test_only", family="resnet", year=2016, paper_macs=1, source="s",
                                 macs_tolerance=0.2, **cifar))
    with pytest.raises(ValueError, match="unknown family"):
        register_model(ModelInfo("zz_test_only", family="transformer", year=2017, **cifar))
    with pytest.raises(ValueError, match="need a source"):
        register_model(ModelInfo("zz_test_only", family="vgg", year=2015, paper_params=1, **cifar))
    assert "zz_test_only" not in list_models()


def test_unknown_name_suggests_close_ones():
    with pytest.raises(ModelNotFoundError, match="Did you mean: .*resnet50"):
        create_model("resnet5O")
    with pytest.raises(ModelNotFoundError, match="'mobilenet_v3'.*mobilenet_v1"):
        get_model_info("mobilenet_v3")


def test_model_info_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_model_info("resnet18").year = 2015


# --- every network: forward pass and paper figures ----------------------------------------------

@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_FORWARD
                                  else n for n in ALL])
def test_forward_pass_at_default_input(name):
    info = get_model_info(name)
    torch.manual_seed(0)
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(1, *info.input_shape))
    assert out.shape == (1, info.num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_counted_params_and_macs_match_the_paper(name):
    info = get_model_info(name)
    params, macs = counted(name)
    assert params > 0 and macs > 0
    if info.paper_params is not None:
        diff = relative_diff(params, info.paper_params)
        assert abs(diff) <= info.params_tolerance, f"params {params:,} vs paper {info.paper_params:,}"
    if info.paper_macs is not None:
        diff = relative_diff(macs, info.paper_macs)
        assert abs(diff) <= info.macs_tolerance, f"MACs {macs:,} vs paper {info.paper_macs:,}"


@pytest.mark.parametrize("name", ALL)
def test_exceptions_are_explained_and_needed(name):
    """A tolerance above 3% says why in notes, and the count really is more than 3% off."""
    info = get_model_info(name)
    params, macs = counted(name)
    for tolerance, paper, value in ((info.params_tolerance, info.paper_params, params),
                                    (info.macs_tolerance, info.paper_macs, macs)):
        if tolerance > DEFAULT_TOLERANCE:
            assert paper is not None and info.notes and f"{tolerance:.0%}" in info.notes
            assert abs(relative_diff(value, paper)) > DEFAULT_TOLERANCE


def test_paper_figures_cover_the_study_families():
    """Every study family but the CIFAR-only forms is checked against some printed figure."""
    checked = {get_model_info(n).family for n in ALL
               if get_model_info(n).paper_params or get_model_info(n).paper_macs}
    assert set(STUDY_FAMILIES) <= checked


# --- hand counts -------------------------------------------------------------------------------

def test_lenet5_against_a_hand_count():
    # params: C1 6*(1*25+1) = 156; C3 16*(6*25+1) = 2,416; C5 120*(16*25+1) = 48,120;
    # F6 84*(120+1) = 10,164; output 10*(84+1) = 850; total 61,706.
    # MACs: C1 28*28*6*25 = 117,600; C3 10*10*16*150 = 240,000; C5 120*400 = 48,000;
    # F6 84*120 = 10,080; output 10*84 = 840; total 416,520.
    assert counted("lenet5") == (61_706, 416_520)


def test_lenet5_partial_c3_against_a_hand_count():
    # C3 per the paper's Table I: 6 maps see 3 S2 maps, 9 see 4, 1 sees 6.
    # params: 6*(3*25+1) + 9*(4*25+1) + (6*25+1) = 456 + 909 + 151 = 1,516 (the paper's figure);
    # total 156 + 1,516 + 48,120 + 10,164 + 850 = 60,806.
    # C3 MACs: 10*10*(6*75 + 9*100 + 150) = 150,000; total 117,600 + 150,000 + 58,920 = 326,520.
    assert counted("lenet5_partial") == (60_806, 326_520)
    c3 = create_model("lenet5_partial").features[3]
    assert sum(p.numel() for p in c3.parameters()) == 1_516


def test_lenet5_partial_c3_follows_the_connection_table():
    """Each C3 map's output depends on exactly the S2 maps Table I lists."""
    from dnncost.models.lenet import C3_TABLE
    c3 = create_model("lenet5_partial").features[3]
    x = torch.randn(1, 6, 14, 14, requires_grad=True)
    for out_map, maps in enumerate(C3_TABLE):
        (grad,) = torch.autograd.grad(c3(x)[0, out_map].sum(), x)
        seen = {m for m in range(6) if grad[0, m].abs().sum() > 0}
        assert seen == set(maps), out_map


def test_resnet20_against_a_hand_count():
    # conv1 3*16*9 + BN 32 = 464; stage 1: 6 convs * (16*16*9 + 32) = 14,016;
    # stage 2: (16*32*9 + 64) + 5*(32*32*9 + 64) = 4,672 + 46,400 = 51,072;
    # stage 3: (32*64*9 + 128) + 5*(64*64*9 + 128) = 18,560 + 184,960 = 203,520;
    # fc 64*10 + 10 = 650; total 269,722 (Table 6: 0.27M). Option A shortcuts add nothing.
    params, _ = counted("resnet20")
    assert params == 269_722
    model = create_model("resnet20")
    assert all(sum(p.numel() for p in block.shortcut.parameters()) == 0 for block in model.layers)


def test_cifar_resnets_have_depth_6n_plus_2():
    for depth in (20, 32, 44, 56, 110):
        model = create_model(f"resnet{depth}")
        convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
        assert convs + 1 == depth  # 6n 3x3 convs + the stem conv + the fc layer
    with pytest.raises(ValueError, match="6n\\+2"):
        ResNetCifar(21)


# --- secondary checks --------------------------------------------------------------------------

TORCHVISION_BUILT = [n for n in ALL if n in torchvision.models.list_models()]


@pytest.mark.parametrize("name", TORCHVISION_BUILT)
def test_torchvision_entries_match_torchvision_documented_figures(name):
    """torchvision's weight metadata (offline) documents params exactly and GFLOPS (= MACs) to
    three decimals; the zoo's builders must give the same network."""
    meta = torchvision.models.get_model_weights(name).DEFAULT.meta
    params, macs = counted(name)
    assert params == meta["num_params"]
    assert macs / 1e9 == pytest.approx(meta["_ops"], abs=0.0006)


def test_resnet50_exception_is_the_stride_placement():
    """Moving each stage's stride-2 back to the first 1x1 (the paper's v1) brings torchvision's
    4.09G MACs to within 3% of the paper's 3.8G."""
    with torch.device("meta"):
        model = create_model("resnet50")
    for layer in (model.layer2, model.layer3, model.layer4):
        layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    macs = count(model, input_shape=(3, 224, 224)).total().macs
    assert abs(relative_diff(macs, get_model_info("resnet50").paper_macs)) <= 0.03


@pytest.mark.parametrize("resolution, paper_macs", [
    # source: Howard et al. 2017, Table 7: 1.0 MobileNet at 192/160/128: 418M/290M/186M mult-adds.
    (192, 418_000_000), (160, 290_000_000), (128, 186_000_000),
])
def test_mobilenet_v1_at_other_resolutions(resolution, paper_macs):
    params, macs = counted("mobilenet_v1", (3, resolution, resolution))
    assert params == counted("mobilenet_v1")[0]  # resolution changes no parameter
    assert abs(relative_diff(macs, paper_macs)) <= 0.03


def test_builders_take_their_options():
    assert create_model("resnet20", num_classes=100).fc.out_features == 100
    wide = create_model("shufflenet_v1_g8", width_mult=0.5)
    assert counted("shufflenet_v1_g8", width_mult=0.5)[1] < counted("shufflenet_v1_g8")[1] / 3
    assert wide.classifier.in_features == 768  # Table 1's 1536 at g=8, halved
    model = create_model("googlenet", aux_logits=True).train()
    out = model(torch.randn(2, 3, 224, 224))
    assert out.logits.shape == out.aux_logits1.shape == (2, 1000)


def test_relu_stacks_without_residuals_use_he_initialisation():
    """VGG (CIFAR) and AlexNet (CIFAR) convolutions start at He et al. 2015's std sqrt(2 / fan)
    (fan-out for VGG as torchvision does, fan-in for AlexNet), with zero biases: PyTorch's default
    left both at chance on digits (issue 13)."""
    import math

    torch.manual_seed(0)
    vgg = create_model("vgg16_bn_cifar")
    conv = [m for m in vgg.modules() if isinstance(m, torch.nn.Conv2d)][5]  # 256 -> 256, 3x3
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.05)
    assert conv.bias.abs().max().item() == 0.0
    alex = create_model("alexnet_cifar")
    conv = [m for m in alex.modules() if isinstance(m, torch.nn.Conv2d)][3]  # 384 -> 256, 3x3
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (384 * 9)), rel=0.05)



def test_cifar_vgg_fully_connected_layers_keep_pytorchs_default():
    """The CIFAR-sized VGG's three fully connected layers start as PyTorch's nn.Linear default
    (uniform on +-1/sqrt(fan_in), so std 1/sqrt(3 fan_in), biases in the same bound), not
    torchvision's N(0, 0.01): that left VGG-16-BN at 51-83% on digits (issue 13)."""
    import math

    torch.manual_seed(0)
    vgg = create_model("vgg16_bn_cifar")
    linears = [m for m in vgg.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 512), (512, 10)]
    bound = 1 / math.sqrt(512)  # fan_in 512 for all three: 0.0442
    for m in linears:
        assert m.weight.abs().max().item() <= bound
        assert m.bias.abs().max().item() <= bound
    # 512 x 512 uniform weights on +-bound: std bound / sqrt(3) = 1 / sqrt(3 * 512) = 0.0255
    assert linears[0].weight.std().item() == pytest.approx(1 / math.sqrt(3 * 512), rel=0.02)
    assert linears[0].bias.abs().max().item() > 0  # not zeroed


def test_shufflenet_residual_units_start_as_the_identity():
    """The last BN of each stride-1 ShuffleNet unit starts at gamma 0 (Goyal et al. 2017), so
    the unit returns its (non-negative, post-ReLU) input unchanged; stride-2 units, which
    concatenate, keep gamma 1; zero_init_residual=False keeps PyTorch's gamma 1 everywhere."""
    from dnncost.models.shufflenet import ShuffleUnit

    torch.manual_seed(0)
    net = create_model("shufflenet_v1_g3_cifar")
    units = [m for m in net.modules() if isinstance(m, ShuffleUnit)]
    assert [u.stride for u in units].count(1) == 3 + 7 + 3  # Table 1: 4, 8, 4 units, first stride 2
    for unit in units:
        gamma = unit.expand[1].weight
        assert bool((gamma == 0).all()) if unit.stride == 1 else bool((gamma == 1).all())
    unit = next(u for u in units if u.stride == 1)
    x = torch.rand(2, 240, 16, 16)  # stage 2 of g3: 240 channels; >= 0 like the ReLU before it
    assert torch.equal(unit.train()(x), x)
    plain = create_model("shufflenet_v1_g3_cifar", zero_init_residual=False)
    assert all(bool((u.expand[1].weight == 1).all())
               for u in plain.modules() if isinstance(u, ShuffleUnit))


def test_family_of_a_zoo_network_and_of_one_from_outside_the_zoo():
    from dnncost.models import OTHER_FAMILY, family_of

    assert family_of("resnet20") == "resnet" and family_of("alexnet_cifar") == "alexnet"
    for outside in ("mobilenet_v3_small", "torchvision:resnet50", "net.py:build"):
        assert family_of(outside) == OTHER_FAMILY
