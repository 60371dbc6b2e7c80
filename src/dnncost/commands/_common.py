"""Argument helpers shared by the subcommands, so every command spells an option the same way."""
from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from dnncost.core.kinds import OPTIMIZERS, OptimizerKind

if TYPE_CHECKING:
    from dnncost.core.inputs import InputSpec

def add_optimizer_argument(parser: argparse.ArgumentParser) -> None:
    """``--optimizer sgd|adam|adamw`` (dnncost.core.kinds.OptimizerKind)."""
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=OptimizerKind.SGD.value,
                        help="optimizer of the training step (default: sgd, momentum 0.9; "
                             "adam, adamw)")


FORMATS = ("table", "json", "csv")


def add_format_argument(parser: argparse.ArgumentParser) -> None:
    """``--format table|json|csv``."""
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="output format (default: table)")


MODEL_HELP = (
    "zoo or torchvision name (resnet50, torchvision:resnet50), timm:NAME, hf:TYPE (a Hugging Face "
    "image classifier from its config), or path/to/file.py:factory")


def add_model_input_arguments(parser: argparse.ArgumentParser, *, specs: bool = True,
                              model_help: str = MODEL_HELP, model_optional: bool = False) -> None:
    """MODEL, ``--input SPEC`` and ``--batch-size N``, as ``count``/``time``/``predict`` take them
    (``specs=False``: one float shape only, for commands that build their own batch;
    ``model_optional``: MODEL may be left out, for a command with an option that needs none)."""
    parser.add_argument("model", metavar="MODEL", nargs="?" if model_optional else None,
                        help=model_help)
    parser.add_argument("--input", dest="input_shape", default=None,
                        metavar="SPEC" if specs else "CxHxW",
                        help="one sample's input, without the batch dimension (default: the model's): "
                             "a shape 3x224x224; a dtype 16:int64 (token ids in [0, 2); "
                             "16:int64:30522 for [0, 30522)); several inputs 3x224x224,4; or "
                             "path/to/file.py:inputs, a function inputs(batch_size) returning a "
                             "tensor, a tuple or a dict of keyword tensors (attention masks)"
                        if specs else "one sample's float input shape without the batch dimension, "
                                      "e.g. 3x224x224 (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=1, metavar="N",
                        help="batch size (default: %(default)s)")


DTYPE_CHOICES = ("float32", "bfloat16", "float16")  # source: the dtypes torch.autocast and CPUs/GPUs run


def add_precision_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dtype``, ``--autocast [DTYPE]`` and ``--channels-last``, as ``count`` and ``time`` take them."""
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default=None,
                        help="cast the model's parameters and floating inputs (default: as built)")
    parser.add_argument("--autocast", nargs="?", const="bfloat16", choices=DTYPE_CHOICES[1:],
                        default=None, metavar="DTYPE",
                        help="run the forward under torch.autocast to DTYPE (default bfloat16); "
                             "needs real tensors (--device cpu/cuda)")
    parser.add_argument("--channels-last", action="store_true",
                        help="channels_last memory format for the model and 4-d inputs")


def input_spec(args: argparse.Namespace, default_shape: tuple[int, ...]) -> InputSpec:
    """The input spec of ``--input`` (see dnncost.core.inputs), or the model's own shape."""
    from dnncost.core.inputs import InputSpec, TensorInput
    from dnncost.models.loading import parse_inputs

    if args.input_shape:
        return parse_inputs(args.input_shape)
    return InputSpec((TensorInput(tuple(default_shape)),), name="x".join(map(str, default_shape)))


@contextmanager
def warnings_once(command: str) -> Iterator[None]:
    """Each distinct warning raised in the block as one line on stderr when it ends, failed or
    not -- ``dnncost <command>: warning: <its first line>`` -- however often it was raised, instead
    of Python's file:line form with the source line below it (torch's prototype and deprecation
    notices from inside a model, an unreadable calibration file ignored)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            lines = (str(w.message).strip().splitlines() for w in caught)
            for message in dict.fromkeys(text[0] for text in lines if text):
                print(f"dnncost {command}: warning: {message}", file=sys.stderr)
