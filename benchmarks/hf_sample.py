"""Draw an evaluation set of Hugging Face image classifiers by a fixed rule, for
``dnncost evaluate --unseen``.

A set chosen by looking at the predictor's errors is not unseen. The rule, stated in advance: every
model type of transformers' image-classification mapping (``MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_
NAMES``, this transformers' list) but ``timm_wrapper`` (timm's networks, which need a hub config),
built from its config class's defaults (``hf:TYPE``), kept in the list's order when it builds on
the meta device and its 3x224x224 training step at batch 8 counts at most ``--max-gflops``. It
prints the transformers version and the ``--models`` argument; nothing is timed or predicted.

Run:  python benchmarks/hf_sample.py
      dnncost evaluate --unseen --models "$(python benchmarks/hf_sample.py --list-only)"
"""
from __future__ import annotations

import argparse
import sys
import warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-gflops", type=float, default=250.0,
                        help="largest 224x224 training step at batch 8, GFLOPs (default: 250, "
                             "evaluate's own cap)")
    parser.add_argument("--list-only", action="store_true", help="print only the --models argument")
    args = parser.parse_args()
    try:
        import transformers
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES as IMAGE_CLASSIFIERS,
        )
    except ImportError:
        sys.exit("this benchmark needs transformers: pip install transformers")

    from timm_sample import RULE, print_set, training_gflops  # the same rule as the timm sets

    from dnncost.core.errors import DnncostError
    from dnncost.models.loading import load_model

    kept: list[tuple[str, float]] = []
    for model_type in IMAGE_CLASSIFIERS:
        if model_type == "timm_wrapper":
            continue
        name = f"hf:{model_type}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                flops = training_gflops(load_model(name).build("meta"))
        except (DnncostError, RuntimeError, ValueError, TypeError, AssertionError, ImportError) as exc:
            if not args.list_only:
                print(f"  left out {name}: {str(exc).splitlines()[0][:100]}", file=sys.stderr)
            continue
        if flops <= args.max_gflops:
            kept.append((name, flops))
        elif not args.list_only:
            print(f"  left out {name}: {flops:.0f} GFLOPs", file=sys.stderr)
    print_set(f"transformers {transformers.__version__}, {len(IMAGE_CLASSIFIERS)} model types, "
              f"at most {args.max_gflops:g} GFLOPs ({RULE})", kept, list_only=args.list_only)


if __name__ == "__main__":
    main()
