"""Argument helpers shared by the subcommands, so every command spells an option the same way."""
from __future__ import annotations

import argparse

FORMATS = ("table", "json", "csv")


def add_format_argument(parser: argparse.ArgumentParser) -> None:
    """``--format table|json|csv``."""
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="output format (default: table)")


def add_model_input_arguments(parser: argparse.ArgumentParser) -> None:
    """MODEL, ``--input CxHxW`` and ``--batch-size N``, as ``count``/``time``/``predict`` take them."""
    parser.add_argument("model", metavar="MODEL",
                        help="zoo or torchvision name (resnet50, torchvision:resnet50), "
                             "timm:NAME, or path/to/file.py:factory")
    parser.add_argument("--input", dest="input_shape", default=None, metavar="CxHxW",
                        help="input shape of one sample, e.g. 3x224x224 (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=1, metavar="N",
                        help="batch size (default: 1)")
