"""Adapt a pretrained face transformer to low-resolution faces with a quality-gated (PETALface) adapter.

    python examples/train_tinyface.py                      # embedded default: small base + small face set, CPU
    accelerate launch examples/train_tinyface.py --base_model ./face-vit --train_data ./tinyface \\
        --eval_data ./tinyface/Testing_Set --output_dir out --mixed_precision fp16 --checkpointing_steps 500
    python examples/train_tinyface.py --base_model ./face-vit --train_data ./faces --objective distill
                                                           # label-free distillation (no identity labels needed)
    python examples/train_tinyface.py --help               # every flag (the same as `petal-peft train`)

All logic lives in petal_peft; this script is `petal-peft train`.
"""

from __future__ import annotations

import sys

from petal_peft.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
