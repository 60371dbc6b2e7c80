"""dnncost whatif with inputs as users have them: token ids (16:int64), keyword inputs from a
file.py:inputs factory, --dtype/--autocast/--channels-last; image-only transformations say why they
do not apply; bad input specs are one error line."""
from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn

from dnncost.cli import main
from dnncost.core.inputs import InputSpec
from dnncost.core.step import Mode
from dnncost.counting.counter import count
from dnncost.measuring.timing import StepOptions
from dnncost.whatif.low_rank import factorise
from dnncost.whatif.registry import Context, NotApplicable, get_transformation, parse_specs
from dnncost.whatif.runner import run_whatif

TOKENS = 16  # sequence length of one sample
VOCAB = 50


class Bag(nn.Module):
    """Token ids -> embedding (8) -> fc1 (8 -> 16) per token -> ReLU -> mean over tokens -> fc2 (16 -> 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 8)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.emb(ids))).mean(1))  # (B, T) -> (B, 10)


BAG_MACS = TOKENS * 8 * 16 + 16 * 10  # fc1 on 16 tokens + fc2: 2048 + 160 = 2208
# low rank at 0.5: fc1 rank ceil(0.5 * 8) = 4, fc2 rank ceil(0.5 * 10) = 5
BAG_LOW_RANK_MACS = TOKENS * (8 * 4 + 4 * 16) + (16 * 5 + 5 * 10)  # 16 * 96 + 130 = 1666
OPTS = StepOptions(batch_size=2, mode=Mode.EVAL, threads=1, warmup=0, steps=2)
IDS = f"{TOKENS}:int64:{VOCAB}"


def bag() -> Bag:
    torch.manual_seed(0)
    return Bag()


def test_token_model_hand_count() -> None:
    assert count(bag(), IDS).total().macs == BAG_MACS  # 2208
    model = bag()
    assert factorise(model, 0.5) == (0, 0, 2)  # no convolution, 2 linear layers
    assert count(model, IDS).total().macs == BAG_LOW_RANK_MACS  # 1666


def test_runner_on_token_ids() -> None:
    specs = parse_specs("low_rank:0.5,prune_magnitude:0.5,channels_last,depthwise_separable,"
                        "batch_size:4")
    results = {r.transformation: r for r in run_whatif(bag(), specs, input_shape=IDS, options=OPTS)}
    low = results["low_rank:0.5"]
    assert low.applicable and low.time_ratio is not None and low.time_ratio.n == 2
    expected = count(_factorised(), IDS, batch_size=2).total().flops \
        / count(bag(), IDS, batch_size=2).total().flops
    assert low.flops_ratio == pytest.approx(expected)
    assert low.params_ratio is not None and low.params_ratio < 1
    assert results["prune_magnitude:0.5"].applicable
    assert results["batch_size:4"].applicable and results["batch_size:4"].batch_size == 4
    layout = results["channels_last"]
    assert not layout.applicable and "4-D (N, C, H, W)" in layout.note and "2-D" in layout.note
    assert not results["depthwise_separable"].applicable


def _factorised() -> Bag:
    model = bag()
    factorise(model, 0.5)
    return model


class Encoder(nn.Module):
    """A tiny text encoder: embedding -> one TransformerEncoderLayer (fused inference path) -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(16, 10)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        pad = None if attention_mask is None else attention_mask == 0
        return self.head(self.enc(self.emb(ids), src_key_padding_mask=pad).mean(1))


def test_transformer_encoder_keeps_its_fused_path_linears() -> None:
    """TransformerEncoderLayer's inference path reads linear1/linear2.weight: low rank and int8
    leave those two alone instead of breaking the network."""
    torch.manual_seed(0)
    specs = parse_specs("low_rank:0.5,int8")
    results = {r.transformation: r for r in run_whatif(Encoder(), specs, input_shape=IDS, options=OPTS)}
    low = results["low_rank:0.5"]
    assert low.applicable and "2 layers kept: a fused inference path or their parent reads" in low.note
    assert low.flops_ratio is not None and low.flops_ratio < 1  # the head is factorised
    assert results["int8"].applicable


def test_batch_size_needs_a_factory_that_honours_it() -> None:
    spec = InputSpec(factory=lambda batch_size: torch.zeros(3, 4, dtype=torch.long), name="fixed.py:inputs")
    context = Context(inputs=spec, batch_size=3, mode=Mode.EVAL, device=torch.device("cpu"), threads=1)
    with pytest.raises(NotApplicable, match="makes batches of 3 when asked for 6"):
        get_transformation("batch_size").apply(bag(), None, context)


@pytest.fixture
def text_file(tmp_path) -> str:
    path = tmp_path / "text_net.py"
    path.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Bag(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(50, 8)
                self.fc1 = nn.Linear(8, 16)
                self.fc2 = nn.Linear(16, 10)

            def forward(self, ids, attention_mask=None):
                h = torch.relu(self.fc1(self.emb(ids)))
                if attention_mask is not None:
                    h = h * attention_mask[..., None]
                return self.fc2(h.mean(1))

        def inputs(batch_size):
            return {"ids": torch.randint(0, 50, (batch_size, 16)),
                    "attention_mask": torch.ones(batch_size, 16)}
    """))
    return str(path)


def test_cli_token_ids(text_file: str, capsys) -> None:
    code = main(["whatif", f"{text_file}:Bag", "--input", IDS, "--batch-size", "2", "--mode", "eval",
                 "--repeats", "2", "--warmup", "0", "--only", "low_rank:0.5,channels_last",
                 "--format", "json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["inputs"] == IDS
    low, layout = payload["results"]
    assert low["applicable"] and low["flops_ratio"] < 1
    assert not layout["applicable"] and "4-D" in layout["note"]


def test_cli_keyword_inputs_from_a_factory(text_file: str, capsys) -> None:
    code = main(["whatif", f"{text_file}:Bag", "--input", f"{text_file}:inputs", "--batch-size", "2",
                 "--mode", "train", "--repeats", "2", "--warmup", "0", "--only",
                 "prune_magnitude:0.5,batch_size", "--format", "csv"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("transformation,") and len(lines) == 3
    assert lines[1].startswith("prune_magnitude:0.5,train,") and lines[2].startswith("batch_size,train,")


@pytest.mark.parametrize("spec, message", [
    ("16:int65", "unknown dtype 'int65'"),
    ("3x", "malformed input shape '3x'"),
    ("16:int64:0", "a value bound follows an integer dtype"),
    ("missing.py:inputs", "does not exist"),
])
def test_cli_bad_input_spec_one_line(text_file: str, spec: str, message: str, capsys) -> None:
    code = main(["whatif", f"{text_file}:Bag", "--input", spec, "--only", "threads"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_cli_train_needs_an_image_input(text_file: str, capsys) -> None:
    code = main(["whatif", f"{text_file}:Bag", "--input", IDS, "--train", "--only", "threads"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--train: training reads images" in err and "'16:int64:50'" in err


def conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, bias=False),
                         nn.Conv2d(8, 8, 3, padding=1, bias=False))


@pytest.mark.parametrize("precision, refusals", [
    ({"dtype": "bfloat16"}, {"bf16": "parameters are bfloat16", "int8": "starts from float32"}),
    ({"autocast": "bfloat16"}, {"bf16": "already runs under bfloat16 autocast"}),
    ({"channels_last": True}, {"channels_last": "already runs channels_last"}),
])
def test_the_original_in_another_precision(precision: dict, refusals: dict[str, str]) -> None:
    specs = parse_specs("low_rank:0.5,bf16,int8,channels_last")
    options = OPTS.replace(**precision)
    results = {r.transformation: r for r in run_whatif(conv_net(), specs, input_shape=(4, 6, 6),
                                                       options=options)}
    factorised = results["low_rank:0.5"]
    assert factorised.applicable
    # Tucker-2 at rank 0.5, 36 pixels: conv1 36 * (4*2 + 2*4*9 + 4*8) = 4032, conv2 36 * (8*4 +
    # 4*4*9 + 4*8) = 7488, against 10368 + 20736: 11520 / 31104
    assert factorised.flops_ratio == pytest.approx(11520 / 31104)
    for name, reason in refusals.items():
        assert not results[name].applicable and reason in results[name].note, results[name].note
