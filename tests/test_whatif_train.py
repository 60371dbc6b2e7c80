"""dnncost whatif --train: the original trained with the study's recipe on digits, each
transformation's accuracy found by its plan (fine-tune, masked fine-tune, evaluate, the original's),
a failed training kept as a note, and the accuracies in the JSON, the store and the report. Tiny
networks on 1x8x8 digits, one epoch each."""
from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn

from dnncost.cli import main
from dnncost.core.inputs import InputSpec, TensorInput
from dnncost.core.step import Mode
from dnncost.training.recipe import Recipe
from dnncost.training.trainer import TrainOptions
from dnncost.whatif import registry
from dnncost.whatif.accuracy import (
    ORIGINAL,
    TrainingOptions,
    epochs_planned,
    load_training_data,
    train_original,
    variant_accuracies,
    zeros_kept,
)
from dnncost.whatif.registry import Training, Variant, parse_specs
from dnncost.whatif.runner import WhatIfResult

DIGITS_CLASSES = 10  # source: sklearn load_digits, ten digit classes
CHANCE = 1 / DIGITS_CLASSES
OPTIONS = TrainingOptions(recipe=Recipe(0.05), train=TrainOptions(epochs=1))
# source: measured, ~0.92 after one epoch
IMAGE = InputSpec((TensorInput((1, 8, 8)),))


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 8 * 8, DIGITS_CLASSES))


def test_every_transformation_says_how_it_is_trained() -> None:
    plans = {name: t.training for name, t in registry.all_transformations().items()}
    assert plans["prune_magnitude"] is Training.FINE_TUNE_MASKED
    assert plans["int8"] is Training.EVALUATE
    assert {n for n, p in plans.items() if p is Training.ORIGINAL} == {
        "channels_last", "compile", "threads", "batch_size"}
    specs = parse_specs("prune_channels:0.5,prune_magnitude:0.5,int8,threads")
    # prune_channels and prune_magnitude train; int8 is evaluated, threads keeps the original's
    assert epochs_planned(specs, TrainingOptions(train=TrainOptions(epochs=3))) == 3 * 2


def test_cli_trains_each_family_the_epochs_the_study_trains_it() -> None:
    """AlexNet's recipe trains 2x the configured epochs in the study (Recipe.epoch_multiple);
    whatif --train gave it the configured epochs only."""
    from dnncost.cli import build_parser
    from dnncost.commands.whatif import _check_training_flags, _training_options
    from dnncost.measuring.timing import StepOptions
    from dnncost.models.loading import load_model

    def training(model: str, *flags: str) -> TrainingOptions:
        args = build_parser().parse_args(["whatif", model, "--train", *flags])
        _check_training_flags(args)
        return _training_options(args, load_model(model), StepOptions(mode=Mode.TRAIN))

    alexnet = training("alexnet_cifar", "--epochs", "3")
    assert alexnet.recipe.epoch_multiple == 2 and alexnet.train.epochs == 6  # 3 configured x 2
    assert alexnet.describe().startswith("6 epochs (the recipe's 2x the configured) on digits")
    assert "x the epochs" not in alexnet.describe()  # the multiple is not stated twice
    assert training("alexnet_cifar").train.epochs == 6  # the default 3 x 2, as in the study
    assert training("lenet5").train.epochs == 3  # the default 3 x 1
    with pytest.raises(Exception, match="--epochs must be a positive integer, got -1"):
        training("alexnet_cifar", "--epochs", "-1")


def test_zeros_kept_while_training() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(6, 4)
    with torch.no_grad():
        layer.weight[:, :3] = 0.0  # 12 of 24 weights zero
    opt_input = torch.randn(8, 6)
    with zeros_kept(layer) as masked:
        assert masked == 1
        optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
        for _ in range(3):
            optimizer.zero_grad()
            layer(opt_input).pow(2).sum().backward()
            optimizer.step()
    assert not hasattr(layer, "weight_orig")  # the mask is made permanent on leaving
    assert torch.all(layer.weight[:, :3] == 0) and torch.all(layer.weight[:, 3:] != 0)


def test_image_input_only() -> None:
    with pytest.raises(Exception, match="one float CxHxW input; its input is '16:int64'"):
        load_training_data(InputSpec((TensorInput((16,), torch.int64),), name="16:int64"), OPTIONS)


def test_accuracies_by_plan() -> None:
    data = load_training_data(IMAGE, OPTIONS)
    epochs: list[str] = []
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trained, original = train_original(model, data, options=OPTIONS,
                                       on_epoch=lambda label, record: epochs.append(label))
    for key, value in model.state_dict().items():  # the model is left as found
        assert torch.equal(value, before[key])
    assert original.transformation == ORIGINAL and original.accuracy is not None
    assert original.accuracy > 5 * CHANCE  # it learns: ~0.92 after one epoch, chance is 0.1
    specs = parse_specs("prune_magnitude:0.5,int8,threads")
    found = {a.transformation: a for a in variant_accuracies(
        trained, specs, data=data, options=OPTIONS, original=original,
        on_epoch=lambda label, record: epochs.append(label))}
    assert epochs == [ORIGINAL, "prune_magnitude:0.5"]  # one epoch each; int8 and threads train none
    magnitude = found["prune_magnitude:0.5"]
    assert magnitude.accuracy is not None and magnitude.accuracy > 5 * CHANCE
    assert "zero weights of 3 layers kept at zero" in magnitude.note
    quantised = found["int8"]
    assert quantised.accuracy is not None and quantised.accuracy > 5 * CHANCE
    assert "not trained" in quantised.note and "training batches" in quantised.note
    assert found["threads"].accuracy == original.accuracy and "original's" in found["threads"].note


def test_fp16_on_cpu_is_validated_not_trained() -> None:
    """fp16 training on a CPU runs ~20x slower than float32 (no fast kernels): whatif --train
    validates the trained original under fp16 autocast instead, and says why; bf16 is trained."""
    data = load_training_data(IMAGE, OPTIONS)
    trained, original = train_original(net(), data, options=OPTIONS)
    epochs: list[str] = []
    found = {a.transformation: a for a in variant_accuracies(
        trained, parse_specs("fp16,bf16"), data=data, options=OPTIONS, original=original,
        on_epoch=lambda label, record: epochs.append(label))}
    assert epochs == ["bf16"]  # one epoch, bf16's only
    fp16 = found["fp16"]
    assert not fp16.failed and fp16.accuracy is not None and fp16.accuracy > 5 * CHANCE
    assert fp16.note == ("not trained (fp16 training on CPU is not fast -- few CPU kernels run "
                         "float16 natively; bf16 is trained): the trained original validated, "
                         "under float16 autocast")
    assert found["bf16"].accuracy is not None and "trained again" in found["bf16"].note


def _three_classes(model: nn.Module, value: float | None, ctx: registry.Context) -> Variant:
    model[-1] = nn.Linear(8 * 8 * 8, 3)  # runs, but cannot be trained on ten classes
    return Variant(model, note="three logits")


@pytest.fixture
def net_file(tmp_path) -> str:
    path = tmp_path / "digits_net.py"
    path.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def net():
            torch.manual_seed(0)
            return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(8 * 8 * 8, 10))
    """))
    return f"{path}:net"


def test_cli_train_json_store_and_a_failed_training(
        net_file: str, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from dnncost.study.store import open_store

    registry.all_transformations()
    monkeypatch.setitem(registry._REGISTRY, "three", registry.Transformation(
        "three", "three logits", _three_classes))
    db = tmp_path / "whatif.sqlite"
    code = main(["whatif", net_file, "--input", "1x8x8", "--batch-size", "4", "--mode", "eval",
                 "--repeats", "2", "--warmup", "0", "--only", "low_rank:0.5,three,threads",
                 "--train", "--epochs", "1", "--format", "json", "--db", str(db)])
    out, err = capsys.readouterr()
    assert code == 0, err
    payload = json.loads(out)
    original = payload["original_accuracy"]["accuracy"]
    assert original > 5 * CHANCE and "1 epoch on digits at batch 32" in payload["original_accuracy"]["note"]
    results = {r["transformation"]: r for r in payload["results"]}
    pruned = results["low_rank:0.5"]
    assert pruned["original_accuracy"] == original and pruned["accuracy"] > 5 * CHANCE
    assert "then trained again (1 epoch, the recipe)" in pruned["accuracy_note"]
    three = results["three"]
    assert three["applicable"] and three["time_ratio"] is not None  # its timing is kept
    assert three["accuracy"] is None and three["accuracy_note"].startswith("training failed:")
    assert "transformation 'three': training failed" in err and "Traceback" not in err
    assert results["threads"]["accuracy"] == original

    with open_store(db, read_only=True) as store:
        rows = {row.transformation: row for _, row in store.whatif_rows()}
    assert rows["low_rank:0.5"].accuracy == pytest.approx(pruned["accuracy"])
    assert rows["low_rank:0.5"].original_accuracy == pytest.approx(original)
    assert rows["three"].accuracy is None and rows["three"].accuracy_note.startswith("training failed")


def test_report_section_shows_the_accuracies(tmp_path) -> None:
    from dnncost.measuring.measurement import Measurement
    from dnncost.measuring.timing import StepOptions
    from dnncost.reporting.blocks import Paragraph, Table
    from dnncost.reporting.sections import whatif_blocks
    from dnncost.study.findings import study_findings
    from dnncost.study.store import open_store
    from dnncost.study.whatif import save_whatif

    timed = dict(applicable=True, flops_ratio=0.5, time_ratio=Measurement((0.7, 0.8)),
                 original=Measurement((1.0, 1.0)), transformed=Measurement((0.7, 0.8)),
                 original_accuracy=0.9)
    results = [WhatIfResult(model="m", transformation="prune_channels:0.5", mode=Mode.TRAIN, note="",
                            accuracy=0.85, accuracy_note="fine-tuned", **timed),
               WhatIfResult(model="m", transformation="fp16", mode=Mode.TRAIN, note="",
                            accuracy=None, accuracy_note="training failed: loss became nan", **timed)]
    with open_store(tmp_path / "s.sqlite") as store:
        save_whatif(store, results, family="other", input_shape=(1, 8, 8),
                    options=StepOptions(mode=Mode.TRAIN), command="test",
                    training=TrainingOptions(train=TrainOptions(epochs=1)))
        blocks = whatif_blocks(study_findings(store))
    (table,) = [b for b in blocks if isinstance(b, Table)]
    assert table.columns[-3:] == ("accuracy", "accuracy_change", "accuracy_note")
    assert table.rows[0][-3:] == ("0.85", "-0.05", "fine-tuned")  # 0.85 - 0.9
    assert table.rows[1][-3:] == ("-", "-", "training failed: loss became nan")
    assert any(isinstance(b, Paragraph) and "validation accuracy of 0.9" in b.text for b in blocks)


def test_result_row_carries_the_accuracy_change() -> None:
    result = WhatIfResult(model="m", transformation="t", mode=Mode.EVAL, applicable=True, note="",
                          original_accuracy=0.9, accuracy=0.85, accuracy_note="fine-tuned")
    row = result.to_row()
    assert row["accuracy_change"] == pytest.approx(-0.05)  # 0.85 - 0.9
    assert result.to_dict()["accuracy_note"] == "fine-tuned"


def test_study_passes_whatif_train_through(tmp_path) -> None:
    from dnncost.study.config import quick_config
    from dnncost.study.store import open_store
    from dnncost.study.sweep import run_study

    config = quick_config(models=("lenet5",), whatif="low_rank:0.5,threads", whatif_train=True)
    assert config.config_hash == quick_config(models=("lenet5",)).config_hash  # whatif adds a table
    with open_store(tmp_path / "study.sqlite") as store:
        summary = run_study(config, store, progress=False)
        assert not summary.failed
        rows = {row.transformation: row for _, row in store.whatif_rows()}
    pruned, threads = rows["low_rank:0.5"], rows["threads"]
    assert pruned.original_accuracy is not None and 0 <= pruned.original_accuracy <= 1
    assert pruned.accuracy is not None and "trained again (1 epoch, the recipe)" in pruned.accuracy_note
    assert threads.accuracy == threads.original_accuracy  # the same network: the original's


def test_study_whatif_train_needs_transformations_and_epochs(tmp_path, capsys) -> None:
    from dnncost.core.errors import InputSpecError
    from dnncost.study.config import quick_config

    with pytest.raises(InputSpecError, match="needs what-if transformations and at least one epoch"):
        quick_config(whatif_train=True)
    with pytest.raises(InputSpecError, match="at least one epoch"):
        quick_config(whatif="threads", whatif_train=True, epochs=0)
    code = main(["study", "--quick", "--whatif-train", "--db", str(tmp_path / "s.sqlite"),
                 "--out", str(tmp_path / "report")])
    assert code == 2 and "needs what-if transformations" in capsys.readouterr().err



def test_progress_bar_ends_full_when_a_variant_is_not_trained() -> None:
    """fp16 on a CPU is planned as a fine-tune but validated instead (no epochs): its planned
    epochs come off the bar's total, so the bar ends full rather than short of it."""
    import io

    from tqdm import tqdm

    from dnncost.commands.whatif import _Trainer
    from dnncost.training.records import EpochRecord

    trainer = _Trainer(None, IMAGE, TrainingOptions(train=TrainOptions(epochs=2)))  # type: ignore[arg-type]
    trainer.bar = tqdm(total=2 + 2, file=io.StringIO())  # two variants planned, 2 epochs each
    record = EpochRecord(epoch=1, train_time_s=0.1, val_time_s=0.1, train_data_time_s=0.0,
                         val_data_time_s=0.0, train_loss=1.0, train_accuracy=0.5, val_loss=1.0,
                         val_accuracy=0.5, train_samples=8, val_samples=8, steps=1)
    for _ in range(2):
        trainer._epoch("bf16", record)
    trainer._settle(2)  # trained: both epochs seen, the total stays
    assert trainer.bar.total == 4
    trainer._settle(2)  # validated instead: no epoch seen
    assert (trainer.bar.n, trainer.bar.total) == (2, 2)
