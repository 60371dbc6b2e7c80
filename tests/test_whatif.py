"""dnncost.whatif: each transformation's counted cost against hand arithmetic on a tiny network,
the function each keeps (or nearly keeps), the interleaved runner and the bad-input errors."""
from __future__ import annotations

import math
import textwrap

import pytest
import torch
from torch import nn

from dnncost.cli import main
from dnncost.core.inputs import InputSpec, TensorInput
from dnncost.core.step import Mode
from dnncost.counting.counter import count
from dnncost.measuring.timing import StepOptions
from dnncost.whatif import registry
from dnncost.whatif.low_rank import factorise_conv, factorise_linear
from dnncost.whatif.prune_channels import find_sites
from dnncost.whatif.prune_magnitude import nominal_flops
from dnncost.whatif.registry import (
    Context,
    NotApplicable,
    TransformationError,
    Variant,
    get_transformation,
    parse_specs,
    register,
)
from dnncost.whatif.runner import run_whatif

SHAPE = (4, 6, 6)  # one sample: 4 channels, 6x6
PIXELS = 6 * 6  # every conv keeps 6x6 (3x3, padding 1, stride 1)
# The tiny network: conv1 4->8 3x3 then conv2 8->8 3x3, no bias, nothing else, so FLOPs = 2 x MACs.
CONV1_MACS = PIXELS * 8 * 4 * 9  # 36 * 8 * 36 = 10368
CONV2_MACS = PIXELS * 8 * 8 * 9  # 36 * 8 * 72 = 20736
TINY_MACS = CONV1_MACS + CONV2_MACS  # 10368 + 20736 = 31104
TINY_FLOPS = 2 * TINY_MACS  # 62208


def tiny() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, bias=False),
                         nn.Conv2d(8, 8, 3, padding=1, bias=False))


def spec_of(shape: tuple[int, ...]) -> InputSpec:
    return InputSpec((TensorInput(shape),))


def context(batch_size: int = 1, mode: Mode = Mode.EVAL, threads: int = 2) -> Context:
    return Context(inputs=spec_of(SHAPE), batch_size=batch_size, mode=mode,
                   device=torch.device("cpu"), threads=threads)


def apply(name: str, value: float | None = None, model: nn.Module | None = None) -> Variant:
    return get_transformation(name).apply(model if model is not None else tiny(), value, context())


def counted(module: nn.Module, batch_size: int = 1, dtype: torch.dtype | None = None):
    if dtype is None:
        return count(module, input_shape=SHAPE, batch_size=batch_size).total()
    inputs = torch.empty(batch_size, *SHAPE, dtype=dtype, device="meta")
    return count(module.to(dtype), inputs).total()


def test_tiny_network_hand_count() -> None:
    total = counted(tiny())
    assert total.macs == TINY_MACS  # 31104
    assert total.flops == TINY_FLOPS  # 62208


# -- each transformation's count against hand arithmetic -------------------------------------
def test_prune_channels_halves_the_middle_channels() -> None:
    variant = apply("prune_channels", 0.5)
    conv1, conv2 = variant.module[0], variant.module[1]
    assert (conv1.out_channels, conv2.in_channels, conv2.out_channels) == (4, 4, 8)
    total = counted(variant.module)
    # conv1 4->4: 36 * 4 * 4*9 = 5184; conv2 4->8: 36 * 8 * 4*9 = 10368; 5184 + 10368 = 15552
    assert total.macs == 15552
    assert total.flops == 2 * 15552  # 31104


def test_prune_channels_keeps_the_largest_filters() -> None:
    model = tiny()
    with torch.no_grad():
        model[0].weight.fill_(0.01)
        model[0].weight[[1, 6]] = 1.0  # filters 1 and 6 have the largest L1 norm
    second = model[1].weight.detach().clone()
    variant = apply("prune_channels", 0.75, model)  # keep round(8 * 0.25) = 2 filters
    assert variant.module[0].out_channels == 2
    assert torch.equal(variant.module[0].weight, torch.ones(2, 4, 3, 3))
    assert torch.equal(variant.module[1].weight, second[:, [1, 6]])


def test_prune_channels_with_bn_and_relu_between_is_the_same_function_on_kept_channels() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(8, 5, 3, padding=1)).eval()
    with torch.no_grad():
        model[0].weight[[0, 2, 4, 6]] = 0.0  # four dead filters, with zero BN shift after them
        model[0].bias[[0, 2, 4, 6]] = 0.0
        model[1].bias[[0, 2, 4, 6]] = -5.0  # ReLU kills them: removing them changes nothing
    x = torch.randn(2, *SHAPE)
    expected = model(x)
    variant = apply("prune_channels", 0.5, model)
    assert variant.module[1].num_features == 4
    torch.testing.assert_close(variant.module.eval()(x), expected)


def test_prune_channels_in_a_residual_block() -> None:
    from dnncost.models.resnet import BasicBlockA

    block = BasicBlockA(8, 8)
    (site,) = find_sites(block)
    assert (site.first, site.bn, site.second) == ("conv1", "bn1", "conv2")
    variant = get_transformation("prune_channels").apply(
        block, 0.5, Context(inputs=spec_of((8, 6, 6)), batch_size=1, mode=Mode.EVAL,
                            device=torch.device("cpu"), threads=1))
    out = variant.module(torch.randn(1, 8, 6, 6))
    assert out.shape == (1, 8, 6, 6)  # the block's outputs (into the addition) are kept
    assert variant.module.conv1.out_channels == 4 and variant.module.bn1.num_features == 4


def test_prune_channels_not_applicable_without_a_provable_site() -> None:
    with pytest.raises(NotApplicable, match="no conv -> conv link"):
        apply("prune_channels", 0.5, nn.Sequential(nn.Flatten(), nn.Linear(144, 3)))


def test_prune_magnitude_executed_and_nominal_flops() -> None:
    model = tiny()
    with torch.no_grad():
        model[0].weight.fill_(1.0)  # 288 large weights
        model[1].weight.fill_(0.1)
        model[1].weight.view(-1)[:144] = 10.0  # conv2: 144 large, 576 - 144 = 432 small
    variant = apply("prune_magnitude", 0.5, model)  # global: 50% of 864 = 432 smallest zeroed
    assert int((variant.module[1].weight == 0).sum()) == 432
    assert int((variant.module[0].weight == 0).sum()) == 0
    assert not hasattr(variant.module[1], "weight_orig")  # made permanent
    report = count(variant.module, input_shape=SHAPE)
    assert report.total().flops == TINY_FLOPS  # dense kernels: executed FLOPs unchanged, 62208
    assert variant.nominal_flops is not None
    # conv2 keeps 144/576 = 1/4: 62208 - 2 * 20736 * 3/4 = 62208 - 31104 = 31104
    assert variant.nominal_flops(report) == 31104


def test_nominal_flops_per_module_density() -> None:
    report = count(tiny(), input_shape=SHAPE)
    # conv1 at density 0.5, conv2 at 0.25: 62208 - 2*10368*0.5 - 2*20736*0.75 = 62208 - 10368 - 31104
    assert nominal_flops(report, {"0": 0.5, "1": 0.25}) == 20736


def test_low_rank_count() -> None:
    variant = apply("low_rank", 0.5)
    total = counted(variant.module)
    # conv1 4->8, R1 = ceil(0.5*4) = 2, R2 = ceil(0.5*8) = 4: 36 * (4*2 + 2*4*9 + 4*8) = 36 * 112
    # conv2 8->8, R1 = R2 = 4: 36 * (8*4 + 4*4*9 + 4*8) = 36 * 208; 4032 + 7488 = 11520
    assert total.macs == 11520
    assert total.flops == 2 * 11520  # no bias anywhere: 23040


def test_low_rank_linear_count() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(16, 12)
    factored = factorise_linear(linear, 0.5)  # R = ceil(0.5 * 12) = 6
    report = count(factored, input_shape=(16,)).total()
    assert report.macs == 16 * 6 + 6 * 12  # 96 + 72 = 168 (was 16 * 12 = 192)
    assert report.flops == 2 * 168 + 12  # the bias adds 12: 348


def test_low_rank_at_full_rank_is_the_same_function() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, stride=2, padding=1)
    x = torch.randn(2, 6, 9, 9)
    torch.testing.assert_close(factorise_conv(conv, 1.0)(x), conv(x), atol=1e-5, rtol=1e-4)
    linear = nn.Linear(16, 12)
    y = torch.randn(3, 16)
    torch.testing.assert_close(factorise_linear(linear, 1.0)(y), linear(y), atol=1e-5, rtol=1e-4)


def test_low_rank_close_to_the_original_on_a_nearly_low_rank_weight() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(32, 32, bias=False)
    with torch.no_grad():  # rank 4 plus a little noise: rank 0.25 * 32 = 8 keeps it all but noise
        linear.weight.copy_(torch.randn(32, 4) @ torch.randn(4, 32) + 1e-3 * torch.randn(32, 32))
    y = torch.randn(5, 32)
    torch.testing.assert_close(factorise_linear(linear, 0.25)(y), linear(y), atol=0.05, rtol=0.01)


def test_depthwise_separable_count() -> None:
    variant = apply("depthwise_separable")
    total = counted(variant.module)
    # conv1 4->8: depthwise 36 * 4*9 = 1296, pointwise 36 * 4*8 = 1152
    # conv2 8->8: depthwise 36 * 8*9 = 2592, pointwise 36 * 8*8 = 2304
    assert total.macs == 1296 + 1152 + 2592 + 2304  # 7344
    assert total.flops == 2 * 7344  # 14688


def test_depthwise_keeps_an_rgb_input_layer_dense() -> None:
    with pytest.raises(NotApplicable, match="dense 3x3"):
        apply("depthwise_separable", model=nn.Sequential(nn.Conv2d(3, 8, 3)))


def test_int8_is_counted_on_the_float_network_and_stays_close() -> None:
    model = tiny().eval()
    x = torch.randn(2, *SHAPE)
    expected = model(x)
    variant = apply("int8", model=model)
    assert variant.count_module is not None
    assert counted(variant.count_module).flops == TINY_FLOPS  # same MACs at int8: 62208
    assert any("quantized" in type(m).__module__ for m in variant.module.modules())
    out = variant.module(x)
    cosine = torch.nn.functional.cosine_similarity(out.flatten(), expected.flatten(), dim=0)
    assert cosine > 0.99


@pytest.mark.parametrize("name, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_reduced_precision_counts_same_flops_half_the_weight_bytes(name: str, dtype: torch.dtype) -> None:
    variant = apply(name)
    assert variant.autocast is dtype and variant.count_dtype is dtype
    report = count(variant.module.to(dtype), torch.empty(1, *SHAPE, dtype=dtype, device="meta"))
    assert report.total().flops == TINY_FLOPS  # 62208
    assert report.param_bytes == 2 * (8 * 4 * 9 + 8 * 8 * 9)  # 2 bytes * 864 weights = 1728


def test_channels_last_same_function_same_count() -> None:
    model = tiny().eval()
    x = torch.randn(2, *SHAPE)
    expected = model(x)
    variant = apply("channels_last", model=model)
    assert variant.channels_last_input
    assert variant.module[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(variant.module(x.contiguous(memory_format=torch.channels_last)),
                               expected)
    assert counted(variant.module).flops == TINY_FLOPS  # 62208


def test_channels_last_needs_images() -> None:
    with pytest.raises(NotApplicable, match="4-D"):
        get_transformation("channels_last").apply(
            nn.Linear(16, 2), None, Context(inputs=spec_of((16,)), batch_size=1, mode=Mode.EVAL,
                                            device=torch.device("cpu"), threads=1))


@pytest.mark.slow
def test_compile_same_function() -> None:
    model = tiny().eval()
    x = torch.randn(2, *SHAPE)
    variant = apply("compile", model=model)
    torch.testing.assert_close(variant.module(x), model(x), atol=1e-5, rtol=1e-4)
    assert counted(variant.count_module).flops == TINY_FLOPS  # counted eagerly: 62208


def test_batch_size_and_threads() -> None:
    variant = apply("batch_size")
    assert variant.batch_size == 2  # default: twice the context's 1
    assert counted(variant.module, batch_size=2).flops == 2 * TINY_FLOPS  # per step: 124416
    assert apply("threads").threads == 1  # the context runs on 2
    with pytest.raises(NotApplicable, match="original"):
        apply("batch_size", 1)


# -- the runner ---------------------------------------------------------------------------------
OPTS = StepOptions(batch_size=2, mode=Mode.EVAL, threads=1, warmup=0, steps=6)


def test_runner_ratios_and_interval() -> None:
    specs = parse_specs("prune_channels:0.5,low_rank:0.5,batch_size:4,int8")
    results = {r.transformation: r for r in run_whatif(tiny(), specs, input_shape=SHAPE, options=OPTS)}
    pruned = results["prune_channels:0.5"]
    assert pruned.applicable and pruned.flops_ratio == pytest.approx(15552 / 31104)  # 0.5
    assert pruned.params_ratio == pytest.approx((4 * 4 * 9 + 8 * 4 * 9) / 864)  # 432 / 864
    assert pruned.time_ratio is not None and pruned.time_ratio.n == 6
    low, high = pruned.time_ratio_ci95
    assert low <= pruned.time_ratio.median <= high
    assert pruned.original is not None and pruned.original.n == 6
    assert pruned.flops == 2 * 31104  # per step of batch 2
    assert results["low_rank:0.5"].flops_ratio == pytest.approx(11520 / 31104)
    assert results["batch_size:4"].flops_ratio == pytest.approx(1.0)  # per sample
    assert results["batch_size:4"].batch_size == 4
    assert results["int8"].flops_ratio == pytest.approx(1.0)
    assert "float network" in results["int8"].count_note


def test_runner_reports_not_applicable_with_reason() -> None:
    specs = parse_specs("int8")
    (result,) = run_whatif(tiny(), specs, input_shape=SHAPE,
                           options=OPTS.replace(mode=Mode.TRAIN))
    assert not result.applicable and result.note == "applies to the eval step only"
    assert result.to_row()["note"] == "not applicable: applies to the eval step only"


def test_runner_train_step_and_magnitude_nominal() -> None:
    specs = parse_specs("prune_magnitude:0.5,channels_last")
    results = list(run_whatif(tiny(), specs, input_shape=SHAPE, options=OPTS.replace(mode=Mode.TRAIN,
                                                                                       steps=2)))
    magnitude, layout = results
    assert magnitude.flops_ratio == pytest.approx(1.0)  # dense kernels
    assert magnitude.nominal_flops_ratio is not None and magnitude.nominal_flops_ratio < 1
    assert layout.flops_ratio == pytest.approx(1.0) and layout.time_ratio is not None
    assert math.isnan(layout.time_ratio_ci95[0])  # 2 pairs: too few for a 95% interval


def test_runner_leaves_the_model_as_found() -> None:
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    list(run_whatif(model, parse_specs("prune_channels:0.5"), input_shape=SHAPE,
                    options=OPTS.replace(mode=Mode.TRAIN, steps=2)))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


# -- bad input -------------------------------------------------------------------------------------
def test_unknown_transformation_suggests() -> None:
    with pytest.raises(TransformationError, match="unknown transformation 'prune_chanels'.*"
                                                  "Did you mean: prune_channels"):
        parse_specs("prune_chanels:0.5")


@pytest.mark.parametrize("text, message", [
    ("prune_channels:1.5", "strictly between 0 and 1, got 1.5"),
    ("prune_channels:0", "strictly between 0 and 1, got 0"),
    ("low_rank:-0.2", "strictly between 0 and 1"),
    ("batch_size:0.5", "positive integer"),
    ("channels_last:0.3", "takes no parameter"),
    ("prune_channels:half", "'half' is not a number"),
])
def test_bad_parameters(text: str, message: str) -> None:
    with pytest.raises(TransformationError, match=message):
        parse_specs(text)


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register("prune_channels", summary="again")(lambda m, v, c: Variant(m))


def test_every_transformation_is_registered() -> None:
    assert set(registry.all_transformations()) == {
        "prune_channels", "prune_magnitude", "low_rank", "depthwise_separable", "int8", "bf16",
        "fp16", "channels_last", "compile", "batch_size", "threads"}


def _breaker(model: nn.Module, value: float | None, ctx: Context) -> Variant:
    model[1] = nn.Conv2d(5, 8, 3, padding=1)  # expects 5 channels, gets 8: a shape error
    return Variant(model, note="broken")


@pytest.fixture
def breaker(monkeypatch: pytest.MonkeyPatch) -> None:
    registry.all_transformations()
    monkeypatch.setitem(registry._REGISTRY, "breaker",
                        registry.Transformation("breaker", "breaks the network", _breaker))


@pytest.mark.usefixtures("breaker")
def test_a_transformation_that_breaks_the_network_is_named_and_earlier_results_kept() -> None:
    kept = []
    with pytest.raises(TransformationError, match="transformation 'breaker' broke the network"):
        for result in run_whatif(tiny(), parse_specs("prune_channels:0.5,breaker"),
                                 input_shape=SHAPE, options=OPTS.replace(steps=2)):
            kept.append(result)
    assert [r.transformation for r in kept] == ["prune_channels:0.5"]


@pytest.fixture
def tiny_file(tmp_path) -> str:
    path = tmp_path / "tiny_net.py"
    path.write_text(textwrap.dedent("""
        from torch import nn
        def tiny():
            return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, bias=False),
                                 nn.Conv2d(8, 8, 3, padding=1, bias=False))
    """))
    return f"{path}:tiny"


@pytest.mark.usefixtures("breaker")
def test_cli_prints_what_was_measured_then_one_error_line(tiny_file: str, capsys) -> None:
    code = main(["whatif", tiny_file, "--input", "4x6x6", "--batch-size", "2", "--mode", "eval",
                 "--repeats", "2", "--warmup", "0", "--only", "prune_channels:0.5,breaker"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "PARTIAL" in out and "prune_channels:0.5" in out
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "transformation 'breaker' broke the network" in errors[0]
    assert "Traceback" not in err


def test_cli_bad_name_and_ratio_exit_2(tiny_file: str, capsys) -> None:
    assert main(["whatif", tiny_file, "--input", "4x6x6", "--only", "lowrank"]) == 2
    assert "Did you mean: low_rank" in capsys.readouterr().err
    assert main(["whatif", tiny_file, "--input", "4x6x6", "--only", "prune_channels:2"]) == 2
    assert "strictly between 0 and 1" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_cli_formats_and_figure(tiny_file: str, fmt: str, tmp_path, capsys) -> None:
    figure = tmp_path / "whatif.png"
    code = main(["whatif", tiny_file, "--input", "4x6x6", "--batch-size", "2", "--mode", "eval",
                 "--repeats", "6", "--warmup", "0", "--only", "prune_channels:0.5,int8",
                 "--format", fmt, "--out", str(figure)])
    out = capsys.readouterr().out
    assert code == 0
    assert "prune_channels:0.5" in out and "int8" in out
    assert figure.read_bytes().startswith(b"\x89PNG")
    if fmt == "json":
        import json

        payload = json.loads(out)
        assert payload["results"][0]["flops_ratio"] == pytest.approx(0.5)  # 15552 / 31104


def test_cli_list(capsys) -> None:
    assert main(["whatif", "--list", "x"]) == 0
    assert "depthwise_separable" in capsys.readouterr().out


class SlowFirstCall(nn.Module):
    """conv1 of the tiny network whose first call sleeps (a stand-in for a slow compilation)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 1:
            import time

            time.sleep(5)
        return self.conv(x)


def test_a_slow_first_call_is_cut_off_as_not_applicable(monkeypatch: pytest.MonkeyPatch) -> None:
    registry.all_transformations()
    monkeypatch.setitem(registry._REGISTRY, "slow", registry.Transformation(
        "slow", "sleeps", lambda m, v, c: Variant(SlowFirstCall(), first_call_limit_s=0.3)))
    (result,) = run_whatif(tiny(), parse_specs("slow"), input_shape=SHAPE, options=OPTS)
    assert not result.applicable
    assert result.note == "the first step (compilation) did not finish within 0.3 s on this machine"


def test_results_kept_in_the_study_database(tiny_file: str, tmp_path, capsys) -> None:
    from dnncost.study.store import open_store

    db = tmp_path / "study.sqlite"
    code = main(["whatif", tiny_file, "--input", "4x6x6", "--batch-size", "2", "--mode", "both",
                 "--repeats", "2", "--warmup", "0", "--only", "prune_channels:0.5,int8",
                 "--db", str(db)])
    assert code == 0
    with open_store(db, read_only=True) as store:
        named = store.whatif_rows()
    assert {name for name, _ in named} == {"tiny_net.py:tiny"}
    rows = [row for _, row in named]
    by_key = {(r.transformation, r.mode): r for r in rows}
    assert set(by_key) == {("prune_channels:0.5", "train"), ("int8", "train"),
                           ("prune_channels:0.5", "eval"), ("int8", "eval")}
    pruned = by_key[("prune_channels:0.5", "eval")]
    assert pruned.flops_ratio == pytest.approx(0.5)  # 15552 / 31104
    assert pruned.time_ratios is not None and len(pruned.time_ratios) == 2
    assert not by_key[("int8", "train")].applicable
    assert by_key[("int8", "train")].note == "applies to the eval step only"


def test_report_section_from_the_store(tiny_file: str, tmp_path) -> None:
    from dnncost.reporting.report import write_report
    from dnncost.study.findings import study_findings
    from dnncost.study.store import open_store

    db = tmp_path / "study.sqlite"
    assert main(["whatif", tiny_file, "--input", "4x6x6", "--batch-size", "2", "--mode", "eval",
                 "--repeats", "6", "--warmup", "0", "--only", "prune_channels:0.5",
                 "--db", str(db)]) == 0
    with open_store(db, read_only=True) as store:
        files = write_report(study_findings(store), tmp_path / "report")
    text = files.markdown.read_text()
    assert "## Does cutting FLOPs cut time? (dnncost whatif)" in text
    assert "| prune_channels:0.5 | eval | 0.5 |" in text  # 15552 / 31104
    assert "The store holds no results yet" in text  # the what-if run is not a study group
    assert any(p.name == "whatif_1.png" for p in files.figures)


def test_study_runs_whatif_and_keeps_it_out_of_the_configuration(tmp_path) -> None:
    from dnncost.study.config import quick_config
    from dnncost.study.store import open_store
    from dnncost.study.sweep import run_study

    config = quick_config(models=("lenet5",), epochs=0, whatif="prune_channels:0.5,int8")
    assert config.config_hash == quick_config(models=("lenet5",), epochs=0).config_hash
    with open_store(tmp_path / "study.sqlite") as store:
        summary = run_study(config, store, progress=False)
        assert not summary.failed
        named = store.whatif_rows()
    rows = {row.transformation: row for name, row in named if name == "lenet5"}
    assert set(rows) == {"prune_channels:0.5", "int8"}
    assert rows["prune_channels:0.5"].applicable and rows["prune_channels:0.5"].mode == "train"
    assert rows["prune_channels:0.5"].time_ratios is not None
    assert len(rows["prune_channels:0.5"].time_ratios) == 2  # quick_config: steps = 2 pairs
    assert rows["int8"].note == "applies to the eval step only"


def test_study_rejects_a_bad_transformation() -> None:
    from dnncost.study.config import quick_config

    with pytest.raises(TransformationError, match="Did you mean: prune_channels"):
        quick_config(whatif="prune_chanels")


@pytest.mark.parametrize("flag, expected", [("all", ""), ("prune_channels:0.5,int8",
                                                           "prune_channels:0.5,int8")])
def test_study_whatif_flag(flag: str, expected: str) -> None:
    from dnncost.cli import build_parser
    from dnncost.commands.study import config_from_args

    args = build_parser().parse_args(["study", "--quick", "--whatif", flag])
    assert config_from_args(args).whatif == expected


def test_study_whatif_flag_bad_name_exit_2(tmp_path, capsys) -> None:
    code = main(["study", "--quick", "--whatif", "lowrank", "--db", str(tmp_path / "s.sqlite"),
                 "--out", str(tmp_path / "report")])
    assert code == 2
    assert "Did you mean: low_rank" in capsys.readouterr().err


class NoKernel(nn.Module):
    """A network whose step fails as a missing kernel would (e.g. fp16 LSTM on a CPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("could not create a primitive descriptor")


def test_a_missing_kernel_is_not_applicable_not_a_broken_network(monkeypatch: pytest.MonkeyPatch) -> None:
    registry.all_transformations()
    monkeypatch.setitem(registry._REGISTRY, "nokernel", registry.Transformation(
        "nokernel", "lacks a kernel", lambda m, v, c: Variant(NoKernel(), kernels_may_lack=True,
                                                              count_module=m)))
    (result,) = run_whatif(tiny(), parse_specs("nokernel"), input_shape=SHAPE, options=OPTS)
    assert not result.applicable
    assert result.note == "the first step failed: RuntimeError: could not create a primitive descriptor"
