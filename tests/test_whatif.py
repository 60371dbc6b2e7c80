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
# (prune_channels: tests/test_prune_channels.py, with the optional torch-pruning)
def test_prune_channels_without_torch_pruning_says_how_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torch_pruning", None)  # import torch_pruning raises ImportError
    with pytest.raises(NotApplicable, match=r'needs torch-pruning: pip install "dnncost\[pruning\]"'):
        apply("prune_channels", 0.5)


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


LOW_RANK_MACS = 11520  # tiny() at rank 0.5: see test_low_rank_count
# params at rank 0.5: conv1 4*2 + 2*4*9 + 4*8 = 112, conv2 8*4 + 4*4*9 + 4*8 = 208 -> 320 of 864
LOW_RANK_PARAMS = 112 + 208


def test_runner_ratios_and_interval() -> None:
    specs = parse_specs("low_rank:0.5,batch_size:4,int8")
    results = {r.transformation: r for r in run_whatif(tiny(), specs, input_shape=SHAPE, options=OPTS)}
    low_rank = results["low_rank:0.5"]
    assert low_rank.applicable and low_rank.flops_ratio == pytest.approx(11520 / 31104)
    assert low_rank.params_ratio == pytest.approx(LOW_RANK_PARAMS / 864)  # 320 / 864
    assert low_rank.time_ratio is not None and low_rank.time_ratio.n == 6
    low, high = low_rank.time_ratio_ci95
    assert low <= low_rank.time_ratio.median <= high
    assert low_rank.original is not None and low_rank.original.n == 6
    assert low_rank.flops == 2 * 2 * LOW_RANK_MACS  # per step of batch 2, no bias: 46080
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
    list(run_whatif(model, parse_specs("low_rank:0.5"), input_shape=SHAPE,
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
        for result in run_whatif(tiny(), parse_specs("low_rank:0.5,breaker"),
                                 input_shape=SHAPE, options=OPTS.replace(steps=2)):
            kept.append(result)
    assert [r.transformation for r in kept] == ["low_rank:0.5"]


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
                 "--repeats", "2", "--warmup", "0", "--only", "low_rank:0.5,breaker"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "PARTIAL" in out and "low_rank:0.5" in out
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
                 "--repeats", "6", "--warmup", "0", "--only", "low_rank:0.5,int8",
                 "--format", fmt, "--out", str(figure)])
    out = capsys.readouterr().out
    assert code == 0
    assert "low_rank:0.5" in out and "int8" in out
    assert figure.read_bytes().startswith(b"\x89PNG")
    if fmt == "json":
        import json

        payload = json.loads(out)
        assert payload["results"][0]["flops_ratio"] == pytest.approx(11520 / 31104)


def test_cli_list_needs_no_model(capsys) -> None:
    assert main(["whatif", "--list"]) == 0
    out = capsys.readouterr().out
    assert "depthwise_separable" in out
    assert "compile: on request only" in out


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
                 "--repeats", "2", "--warmup", "0", "--only", "low_rank:0.5,int8",
                 "--db", str(db)])
    assert code == 0
    with open_store(db, read_only=True) as store:
        named = store.whatif_rows()
    assert {name for name, _ in named} == {"tiny_net.py:tiny"}
    rows = [row for _, row in named]
    by_key = {(r.transformation, r.mode): r for r in rows}
    assert set(by_key) == {("low_rank:0.5", "train"), ("int8", "train"),
                           ("low_rank:0.5", "eval"), ("int8", "eval")}
    factorised = by_key[("low_rank:0.5", "eval")]
    assert factorised.flops_ratio == pytest.approx(11520 / 31104)
    assert factorised.time_ratios is not None and len(factorised.time_ratios) == 2
    assert not by_key[("int8", "train")].applicable
    assert by_key[("int8", "train")].note == "applies to the eval step only"


def test_report_section_from_the_store(tiny_file: str, tmp_path) -> None:
    from dnncost.reporting.report import write_report
    from dnncost.study.findings import study_findings
    from dnncost.study.store import open_store

    db = tmp_path / "study.sqlite"
    assert main(["whatif", tiny_file, "--input", "4x6x6", "--batch-size", "2", "--mode", "eval",
                 "--repeats", "6", "--warmup", "0", "--only", "low_rank:0.5",
                 "--db", str(db)]) == 0
    with open_store(db, read_only=True) as store:
        files = write_report(study_findings(store), tmp_path / "report")
    text = files.markdown.read_text()
    assert "## Does cutting FLOPs cut time? (dnncost whatif)" in text
    assert "| low_rank:0.5 | eval | 0.37 |" in text  # 11520 / 31104 = 0.370
    assert "The store holds no results yet" in text  # the what-if run is not a study group
    assert any(p.name == "whatif_1.png" for p in files.figures)


def test_study_runs_whatif_and_keeps_it_out_of_the_configuration(tmp_path) -> None:
    from dnncost.study.config import quick_config
    from dnncost.study.store import open_store
    from dnncost.study.sweep import run_study

    config = quick_config(models=("lenet5",), epochs=0, whatif="low_rank:0.5,int8")
    assert config.config_hash == quick_config(models=("lenet5",), epochs=0).config_hash
    with open_store(tmp_path / "study.sqlite") as store:
        summary = run_study(config, store, progress=False)
        assert not summary.failed
        named = store.whatif_rows()
    rows = {row.transformation: row for name, row in named if name == "lenet5"}
    assert set(rows) == {"low_rank:0.5", "int8"}
    assert rows["low_rank:0.5"].applicable and rows["low_rank:0.5"].mode == "train"
    assert rows["low_rank:0.5"].time_ratios is not None
    assert len(rows["low_rank:0.5"].time_ratios) == 2  # quick_config: steps = 2 pairs
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


# -- low rank of 1x1 convolutions -------------------------------------------------------------------
def test_low_rank_pointwise_count_and_function() -> None:
    from dnncost.whatif.low_rank import factorise, factorise_pointwise

    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 1, stride=2)
    factored = factorise_pointwise(conv, 0.25)  # R = ceil(0.25 * min(16, 24)) = 4
    report = count(factored, input_shape=(16, 6, 6)).total()  # stride 2: 3x3 = 9 output pixels
    assert report.macs == 9 * (16 * 4 + 4 * 24)  # 9 * 160 = 1440 (was 9 * 16 * 24 = 3456)
    assert report.flops == 2 * 1440 + 9 * 24  # the bias on the second: 2880 + 216 = 3096
    x = torch.randn(2, 16, 6, 6)
    torch.testing.assert_close(factorise_pointwise(conv, 1.0)(x), conv(x), atol=1e-5, rtol=1e-4)
    # a MobileNet block at 0.25: expand 4 -> 16 (R 1: 1 * 20 < 64) and project 16 -> 8 (R 2:
    # 2 * 24 < 128) factorised; the depthwise 3x3 (groups 16) is left alone
    block = nn.Sequential(nn.Conv2d(4, 16, 1), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                          nn.Conv2d(16, 8, 1))
    assert factorise(block, 0.25) == (0, 2, 0)


# -- which transformations run, and how many pairs ---------------------------------------------------
def test_a_run_without_names_leaves_the_on_request_ones_out() -> None:
    default = {s.transformation.name for s in parse_specs(None)}
    assert "compile" not in default and {"prune_channels", "low_rank", "fp16"} <= default
    assert get_transformation("compile").on_request
    assert [s.label for s in parse_specs("compile")] == ["compile"]  # named: it runs


@pytest.mark.parametrize("text", ["", " ", ",", " , "])
def test_text_naming_no_transformation_is_an_error(text: str) -> None:
    with pytest.raises(TransformationError, match="no transformation named in .*low_rank"):
        parse_specs(text)


def test_an_emulated_variant_is_timed_with_fewer_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    from dnncost.whatif import precision
    from dnncost.whatif.runner import EMULATED_PAIRS

    monkeypatch.setattr(precision, "_native_on_cpu", lambda dtype: dtype is not torch.float16)
    cpu = torch.device("cpu")
    assert get_transformation("fp16").emulated_on(cpu, Mode.EVAL).startswith(
        "this CPU has no native float16 kernels")
    assert get_transformation("bf16").emulated_on(cpu, Mode.EVAL) == ""
    fp16, bf16 = run_whatif(tiny(), parse_specs("fp16,bf16"), input_shape=SHAPE, options=OPTS)
    assert fp16.time_ratio is not None and fp16.time_ratio.n == EMULATED_PAIRS == 2
    assert fp16.emulated and "no native float16 kernels (emulated): 2 pairs" in fp16.note
    assert bf16.time_ratio is not None and bf16.time_ratio.n == 6 and not bf16.emulated


def test_fp16_training_on_a_cpu_counts_as_emulated_even_with_native_kernels(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from dnncost.whatif import precision

    monkeypatch.setattr(precision, "_native_on_cpu", lambda dtype: True)
    fp16, cpu = get_transformation("fp16"), torch.device("cpu")
    assert fp16.emulated_on(cpu, Mode.TRAIN) == precision.CPU_FP16_TRAINING
    assert fp16.emulated_on(cpu, Mode.EVAL) == ""
    assert get_transformation("bf16").emulated_on(cpu, Mode.TRAIN) == ""


def test_cli_list_says_what_this_machine_emulates(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from dnncost.whatif import precision

    monkeypatch.setattr(precision, "_native_on_cpu", lambda dtype: False)
    assert main(["whatif", "--list", "--mode", "eval"]) == 0
    out = capsys.readouterr().out
    assert "2 pairs (emulated)" in out
    assert ("fp16: this CPU has no native float16 kernels (emulated) in the eval step on cpu: timed "
            "with 2 pairs") in out


# -- int8 never prints torch's traceback or deprecation warnings (N7) ---------------------------
def test_int8_static_failure_prints_nothing_and_falls_back(monkeypatch: pytest.MonkeyPatch,
                                                           capfd) -> None:
    """torch.fx prints the traceback of a traced forward that fails before raising; the fallback
    to dynamic quantisation is taken with the failure in one line and nothing on the terminal."""
    import sys

    from dnncost.whatif import int8

    def failing_static(model: nn.Module, context: Context) -> nn.Module:
        print("Traceback (most recent call last):\n  File <eval_with_key>.3", file=sys.stderr)
        raise RuntimeError("Could not run 'aten::upsample' with arguments from the 'QuantizedCPU' "
                           "backend\nmore lines")

    monkeypatch.setattr(int8, "static_fx", failing_static)
    model = nn.Sequential(nn.Flatten(), nn.Linear(144, 10), nn.ReLU(), nn.Linear(10, 3)).eval()
    variant = apply("int8", model=model)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert variant.note.startswith("dynamic int8 of 2 Linear only (static FX failed: RuntimeError: "
                                   "Could not run 'aten::upsample'")
    assert "more lines" not in variant.note


def test_int8_neither_flow_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from dnncost.whatif import int8

    monkeypatch.setattr(int8, "static_fx", lambda m, c: (_ for _ in ()).throw(TypeError("no trace")))
    with pytest.raises(NotApplicable, match=r"^static FX quantisation failed \(TypeError: no trace\) "
                                            r"and there is no Linear, LSTM or GRU layer"):
        apply("int8")


def test_int8_of_a_text_model_on_the_command_line_is_quiet(tmp_path, capsys) -> None:
    """A text model whose forward FX cannot trace (the optional mask's branch): dynamic int8 of its
    LSTM and head, no traceback and no deprecation warning on the terminal."""
    path = tmp_path / "text_net.py"
    path.write_text(textwrap.dedent("""
        from torch import nn

        class TinyText(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(100, 16)
                layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
                self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
                self.lstm = nn.LSTM(16, 8, batch_first=True)
                self.head = nn.Linear(8, 3)

            def forward(self, ids, attention_mask=None):
                pad = None if attention_mask is None else attention_mask == 0
                hidden, _ = self.lstm(self.enc(self.emb(ids), src_key_padding_mask=pad))
                return self.head(hidden[:, -1])
    """))
    code = main(["whatif", f"{path}:TinyText", "--input", "5:int64:100", "--only", "int8",
                 "--mode", "eval", "--batch-size", "2", "--repeats", "2", "--warmup", "0"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "dynamic int8 of 1 LSTM, 1 Linear only" in out
    assert "Traceback" not in err and "deprecated" not in err and "quant_min" not in err


# -- several networks, one figure -----------------------------------------------------------------
@pytest.fixture
def two_files(tmp_path) -> str:
    path = tmp_path / "nets.py"
    path.write_text(textwrap.dedent("""
        from torch import nn
        def tiny():
            return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, bias=False),
                                 nn.Conv2d(8, 8, 3, padding=1, bias=False))
        def wide():
            return nn.Sequential(nn.Conv2d(4, 16, 3, padding=1, bias=False),
                                 nn.Conv2d(16, 8, 3, padding=1, bias=False))
    """))
    return f"{path}:tiny,{path}:wide"


def _several(models: str, fmt: str, figure, capsys) -> tuple[int, str, str]:
    code = main(["whatif", models, "--input", "4x6x6", "--batch-size", "2", "--mode", "eval",
                 "--repeats", "2", "--warmup", "0", "--only", "low_rank:0.5,depthwise_separable",
                 "--format", fmt, "--out", str(figure)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_several_networks_json_and_one_figure(two_files: str, tmp_path, capsys) -> None:
    import json

    figure = tmp_path / "all.png"
    code, out, err = _several(two_files, "json", figure, capsys)
    assert code == 0, err
    payload = json.loads(out)
    assert payload["partial"] is False
    tiny_net, wide_net = payload["networks"]
    assert tiny_net["model"] == "nets.py:tiny" and wide_net["model"] == "nets.py:wide"
    assert tiny_net["results"][0]["flops_ratio"] == pytest.approx(11520 / 31104)
    # wide at rank 0.5, 36 pixels: conv1 4 -> 16 (R1 2, R2 8): 4*2 + 2*8*9 + 8*16 = 280;
    # conv2 16 -> 8 (R1 8, R2 4): 16*8 + 8*4*9 + 4*8 = 448; against 16*4*9 = 576 and 8*16*9 = 1152
    assert wide_net["results"][0]["flops_ratio"] == pytest.approx((280 + 448) / (576 + 1152))
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_cli_several_networks_table_and_csv(two_files: str, tmp_path, capsys) -> None:
    code, out, err = _several(two_files, "table", tmp_path / "a.png", capsys)
    assert code == 0, err
    assert "nets.py:tiny: what if?" in out and "nets.py:wide: what if?" in out
    code, out, err = _several(two_files, "csv", tmp_path / "b.png", capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("model,transformation,mode,") and len(lines) == 1 + 2 * 2
    assert lines[1].startswith("nets.py:tiny,low_rank:0.5,eval,")
    assert lines[4].startswith("nets.py:wide,depthwise_separable,eval,")


def test_figure_colour_per_network_marker_per_technique_accuracy_in_labels() -> None:
    from dnncost.measuring.measurement import Measurement
    from dnncost.reporting.whatif import flops_vs_time
    from dnncost.whatif.runner import WhatIfResult

    def result(model: str, label: str, accuracy: float | None) -> WhatIfResult:
        return WhatIfResult(model=model, transformation=label, mode=Mode.TRAIN, applicable=True,
                            note="", flops_ratio=0.5, time_ratio=Measurement((0.8, 0.9)),
                            original_accuracy=0.9 if accuracy is not None else None,
                            accuracy=accuracy)

    fig = flops_vs_time([result("a", "prune_channels:0.5", 0.85), result("a", "low_rank:0.5", None),
                         result("b", "prune_channels:0.5", None)])
    (ax,) = fig.axes
    texts = {t.get_text() for t in ax.texts}
    assert "prune_channels:0.5 acc 0.850 (-0.050)" in texts  # 0.85 - 0.9
    legends = [[t.get_text() for t in legend.get_texts()] for legend in fig.legends]
    assert ["a (original acc 0.900)", "b"] in legends
    assert any(legend[:2] == ["prune_channels", "low_rank"] for legend in legends)
    colours = {line.get_color() for line in ax.lines if line.get_marker() not in ("None", "")}
    assert len(colours) >= 2  # one per network


def test_check_output_file_leaves_nothing_behind(tmp_path) -> None:
    from dnncost.core.errors import OutputError
    from dnncost.reporting.report import check_output_file

    assert check_output_file(tmp_path / "new.png") == tmp_path / "new.png"
    assert list(tmp_path.iterdir()) == []  # tried, then removed
    (tmp_path / "old.png").write_bytes(b"kept")
    check_output_file(tmp_path / "old.png")
    assert (tmp_path / "old.png").read_bytes() == b"kept"
    with pytest.raises(OutputError, match="it is a folder"):
        check_output_file(tmp_path)
    with pytest.raises(OutputError, match="does not exist"):
        check_output_file(tmp_path / "missing" / "x.png")


class ReadsItsChildsWeight(nn.Module):
    """A parent that reads its child's weight instead of calling it (as Swin's attention reads
    qkv.weight), beside an ordinary child it calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.qkv = nn.Linear(144, 64)
        self.head = nn.Linear(64, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = nn.functional.linear(x.flatten(1), self.qkv.weight, self.qkv.bias)  # (B, 64)
        return self.head(hidden)  # (B, 32)


def test_layers_whose_weights_a_parent_reads_are_kept() -> None:
    """low rank and int8 replace only layers the forward calls; a replaced qkv would have no
    .weight for its parent to read."""
    variant = apply("low_rank", 0.25, ReadsItsChildsWeight())
    assert type(variant.module.qkv) is nn.Linear  # kept
    assert type(variant.module.head) is nn.Sequential  # 64 -> 8 -> 32: 8 * 96 < 64 * 32
    assert "1 layers kept: a fused inference path or their parent reads their weights" in variant.note
    assert variant.module(torch.randn(2, *SHAPE)).shape == (2, 32)
    from dnncost.whatif import int8

    quantised, kinds = int8.dynamic(ReadsItsChildsWeight(), context().make_inputs(1))
    assert kinds == {"Linear": 1} and type(quantised.qkv) is nn.Linear


# -- the applicability matrix -------------------------------------------------------------------
def test_matrix_cells_of_a_network() -> None:
    """Structural transformations on the network built on meta, the others on its weights; the
    ratios are those a whatif run counts; a network over the weight bound skips the latter."""
    from dnncost.models.loading import LoadedModel
    from dnncost.whatif.applicability import matrix, network_cells, reason_kind

    loaded = LoadedModel("tiny", tiny, SHAPE)
    specs = parse_specs("low_rank:0.5,depthwise_separable,int8,prune_magnitude:0.5,threads")
    cells = {c.transformation: c for c in network_cells(loaded, specs, threads=2)}
    assert cells["low_rank:0.5"].flops_ratio == pytest.approx(11520 / 31104)  # as counted above
    assert cells["low_rank:0.5"].params_ratio == pytest.approx(LOW_RANK_PARAMS / 864)
    # depthwise: both convolutions have 4 or more inputs, both replaced: 7344 MACs (see above)
    assert cells["depthwise_separable"].flops_ratio == pytest.approx(7344 / 31104)
    assert cells["int8"].applicable and cells["int8"].flops_ratio == pytest.approx(1.0)
    assert cells["prune_magnitude:0.5"].flops_ratio == pytest.approx(1.0)  # dense kernels
    assert cells["threads"].applicable
    small = {c.transformation: c for c in matrix([loaded], specs, threads=2, max_weight_bytes=1)}
    assert small["int8"].skipped and small["prune_magnitude:0.5"].skipped
    assert "over this run's bound" in small["int8"].reason
    assert small["low_rank:0.5"].applicable  # structural: built on meta, never copied with weights
    assert reason_kind("12 of 20 layers ('conv1') (RuntimeError: 3x4)") == "N of N layers (...) (...)"
