"""``petal-peft convert``: turn a foreign face-recognition checkpoint into a transformers model (+ PEFT adapter).

``petal-peft convert petalface model.pt --out DIR [--iqa brisque|cnniqa] [--dtype float16] [--push-to-hub REPO]``
``petal-peft convert insightface-vit model.pt --out DIR [...]``
``petal-peft convert insightface-iresnet backbone.pth --out DIR [--lora-scale S] [--dtype float16] [...]``

Writes ``DIR/base`` (load with ``AutoModel.from_pretrained`` after ``import petal_peft``) and, when the checkpoint
holds LoRA weights, ``DIR/adapter`` (``PeftModel.from_pretrained(base, DIR/adapter)``).
"""

from __future__ import annotations

import argparse

from .common import DTYPES, Subcommand, add_progress_argument, add_subcommands


def _file_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="the checkpoint file (read with torch.load(weights_only=True) only)")
    parser.add_argument("--out", required=True, help="output folder (gets base/ and, with LoRA weights, adapter/)")
    parser.add_argument("--lora-scale", type=float, default=1.0, help="the reference's --lora_scale (default 1)")


def _output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=DTYPES, help="cast the weights to this dtype (default: keep)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload the result to this Hub repo (user/name)")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    add_progress_argument(parser)


def _lora_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of a checkpoint that may hold PETALface's LoRA (petalface, insightface-vit)."""
    _file_arguments(parser)
    parser.add_argument(
        "--iqa",
        choices=("brisque", "cnniqa"),
        default="brisque",
        help="the image-quality metric the LoRA was trained with (decides which branch is high quality)",
    )
    parser.add_argument(
        "--gate-threshold",
        type=float,
        help="the IQA threshold used in training: configures the reference's unclamped gate, so raw IQA scores "
        "(quality_score=) reproduce it exactly; without it the adapter keeps the bounded default gate",
    )
    _output_arguments(parser)


def _vit_arguments(parser: argparse.ArgumentParser) -> None:
    _lora_arguments(parser)
    parser.add_argument("--num-attention-heads", type=int, default=8, help="not stored in the weights (default 8)")
    parser.add_argument("--image-size", type=int, help="input size in px (default 112 when it fits the patch grid)")


def _iresnet_arguments(parser: argparse.ArgumentParser) -> None:
    _file_arguments(parser)
    parser.add_argument("--image-size", type=int, help="input size in px (default 112 when it fits the fc layer)")
    _output_arguments(parser)


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Convert a released face-recognition checkpoint into a transformers model folder and, when it holds LoRA "
        "weights, a PEFT adapter folder."
    )
    kinds = {
        "petalface": Subcommand(
            "a PETALface model.pt: Swin (pretrained, LoRA or quality-gated fine-tuned) or IResNet with LoRA",
            "Convert a PETALface model.pt (e.g. from the Hub repo kartiknarayan/PETALface): a Swin, or an IResNet "
            "with LoRA on its convolutions (written as a plain PEFT LoRA adapter).",
            _lora_arguments,
            run_convert,
        ),
        "insightface-vit": Subcommand(
            "an insightface arcface_torch ViT (vit_t / vit_s / vit_b, with or without PETALface LoRA)",
            "Convert an insightface arcface_torch ViT checkpoint.",
            _vit_arguments,
            run_convert,
        ),
        "insightface-iresnet": Subcommand(
            "an insightface arcface_torch IResNet backbone.pth (iresnet18 / 34 / 50 / 100 / 200)",
            "Convert an insightface arcface_torch IResNet backbone.pth (a plain state dict; the depth comes from the "
            "number of blocks per stage). A PETALface IResNet LoRA checkpoint also gets a PEFT LoRA adapter.",
            _iresnet_arguments,
            run_convert,
        ),
    }
    add_subcommands(parser, "kind", "KIND", kinds)


def run_convert(args: argparse.Namespace) -> int:
    from petal_peft.convert import (
        convert_insightface_iresnet,
        convert_insightface_vit,
        convert_petalface_checkpoint,
        push_converted,
    )

    options = dict(
        lora_scale=args.lora_scale, dtype=args.dtype, overwrite=args.overwrite, progress=not args.no_progress
    )
    if args.kind == "insightface-iresnet":
        result = convert_insightface_iresnet(args.path, args.out, image_size=args.image_size, **options)
    elif args.kind == "petalface":
        options.update(iqa=args.iqa, gate_threshold=args.gate_threshold)
        result = convert_petalface_checkpoint(args.path, args.out, **options)
    else:
        options.update(iqa=args.iqa, gate_threshold=args.gate_threshold)
        result = convert_insightface_vit(
            args.path, args.out, num_attention_heads=args.num_attention_heads, image_size=args.image_size, **options
        )
    print(result.summary())
    if args.push_to_hub:
        url = push_converted(result, args.push_to_hub, private=args.private)
        print(f"Pushed to {url}")
    return 0
