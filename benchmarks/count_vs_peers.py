"""dnncost's MAC counts side by side with the counters users already know, on the same models.

Run:  python benchmarks/count_vs_peers.py [--models resnet18,mobilenet_v2,vit_b_16,tiny_text,tiny_bert]

Peers (each optional: a peer that is not installed is skipped): torch's FlopCounterMode, fvcore
(FlopCountAnalysis), ptflops (get_model_complexity_info, its default backend) and torchinfo
(summary's total_mult_adds). Every figure is in MACs (multiply-accumulates): FlopCounterMode's
FLOPs are halved (it counts 2 per MAC); fvcore's "flops" and ptflops' "MACs" are already MACs.
The reference column is the hand count for the tiny models (arithmetic in tests/test_text_models.py)
and torchvision's documented GFLOPS (which are MACs) for its models. Seconds per count beside each.
Prints a Markdown table; the differences are explained in the README.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dnncost.counting.counter import count

DEFAULT_MODELS = "resnet18,mobilenet_v2,vit_b_16,tiny_text,tiny_bert"
# source: torchvision model docs, "GFLOPS" of each weight enum (they are MACs), in units of 1e9
TORCHVISION_GMACS = {"resnet18": 1.81, "mobilenet_v2": 0.30, "vit_b_16": 17.56}
TINY_TEXT_MACS = 29_808  # source: hand count in tests/test_text_models.py (22,080 + 7,680 + 48)
TINY_BERT_MACS = 592_064  # source: hand count in tests/test_text_models.py::test_hf_bert_from_a_config


class TinyText(nn.Module):
    """Embedding(100, 16) -> TransformerEncoderLayer(16, 2 heads, 32) -> LSTM(16, 8) -> Linear(8, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.lstm = nn.LSTM(16, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.lstm(self.enc(self.emb(input_ids)))  # (B, S, 8)
        return self.head(hidden[:, -1])


def build(name: str) -> tuple[nn.Module, tuple[torch.Tensor, ...], str]:
    """(model in eval mode, its inputs, the reference figure as text)."""
    if name == "tiny_text":
        return TinyText().eval(), (torch.randint(0, 100, (2, 5)),), f"{TINY_TEXT_MACS:,} (hand)"
    if name == "tiny_bert":
        import transformers

        config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=64,
                                         max_position_embeddings=64, num_labels=3)
        model = transformers.BertForSequenceClassification(config).eval()
        return model, (torch.randint(0, 100, (2, 16)),), f"{TINY_BERT_MACS:,} (hand)"
    import torchvision.models as tvm

    reference = f"{TORCHVISION_GMACS[name]:.2f} G (docs)" if name in TORCHVISION_GMACS else "-"
    return tvm.get_model(name, weights=None).eval(), (torch.randn(1, 3, 224, 224),), reference


def dnncost_macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    return count(model, inputs).total().macs


def flop_counter_macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*inputs)
    return counter.get_total_flops() // 2


def fvcore_macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, inputs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return int(analysis.total())


def ptflops_macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    from ptflops import get_model_complexity_info

    macs, _ = get_model_complexity_info(model, tuple(inputs[0].shape[1:]),
                                        input_constructor=lambda _: _positional(model, inputs),
                                        as_strings=False, print_per_layer_stat=False, verbose=False)
    return int(macs)


def _positional(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """ptflops calls model(**constructor()): name the first forward parameter."""
    import inspect

    first = next(iter(inspect.signature(model.forward).parameters))
    return {first: inputs[0]}


def torchinfo_macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    from torchinfo import summary

    return int(summary(model, input_data=list(inputs), verbose=0).total_mult_adds)


PEERS: dict[str, Callable[[nn.Module, tuple[torch.Tensor, ...]], int]] = {
    "dnncost": dnncost_macs, "FlopCounterMode": flop_counter_macs, "fvcore": fvcore_macs,
    "ptflops": ptflops_macs, "torchinfo": torchinfo_macs,
}


def _run(fn: Callable[[], int]) -> tuple[str, float]:
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value: Any = fn()
    except ImportError:
        return "not installed", 0.0
    except Exception as exc:  # a peer's failure on a model is a result of the comparison
        return f"failed: {type(exc).__name__}", time.perf_counter() - start
    return f"{value:,}", time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; MACs (seconds per count)\n")
    print("| model | reference | " + " | ".join(PEERS) + " |")
    print("|---|---|" + "---|" * len(PEERS))
    for name in args.models.split(","):
        try:
            model, inputs, reference = build(name)
        except ImportError as exc:
            print(f"| {name} | skipped: {exc.name} not installed |" + " |" * len(PEERS))
            continue
        cells = []
        for fn in PEERS.values():
            text, seconds = _run(lambda fn=fn, model=model, inputs=inputs: fn(model, inputs))
            cells.append(text if not seconds else f"{text} ({seconds:.2f} s)")
        print(f"| {name} | {reference} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
