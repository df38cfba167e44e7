"""Adapt a pretrained face transformer to low-resolution faces with a quality-gated (PETALface) adapter.

    python examples/train_tinyface.py                      # embedded default: small base + small face set, CPU
    accelerate launch examples/train_tinyface.py --base_model ./face-vit --train_data ./tinyface \\
        --eval_data ./tinyface/Testing_Set --output_dir out --mixed_precision fp16 --checkpointing_steps 500
    python examples/train_tinyface.py --help               # every flag (one per FaceAdapterTrainingConfig field)

All logic lives in petal_peft.training; this script only wires it up.
"""

from __future__ import annotations

import sys

from petal_peft.data import DataValidationError
from petal_peft.training import format_metrics_table, parse_args, train


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        result = train(config)
    except DataValidationError as err:
        print(f"error: bad training data: {err}", file=sys.stderr)
        return 2
    if result.adapter_dir is not None:  # main process
        print(f"\nTrained on: {result.train_description}")
        print(format_metrics_table(result.metrics_before, result.metrics_after))
        print(f"{result.global_step} steps in {result.runtime_s:.0f} s; adapter and head saved to {result.adapter_dir}")
        if result.hub_url:
            print(f"Pushed to {result.hub_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
