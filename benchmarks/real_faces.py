"""The low-resolution adaptation benchmark on real faces (LFW View-2 folds + Glint360K celebrities).

    python benchmarks/real_faces.py run --faces /path/to/faces --base DIR --out DIR --seeds 0 1 2 [--docs]
    python benchmarks/real_faces.py split --faces /path/to/faces      # the groups and split sizes, no training
    python benchmarks/real_faces.py budget --faces DIR --base DIR --minutes 75   # timed: the --steps that fit
    python benchmarks/real_faces.py run --faces DIR --out DIR --quick  # pipeline check: tiny random base, 1 seed
    python benchmarks/real_faces.py build-base --faces DIR --out DIR   # (re)build the real-face base (~25 min)

``--faces`` is the folder holding ``lfw/`` (LFW images + ``pairs_view2.csv``) and optional extra sets such as
``glint_celeb24/``; images are read from there and never copied into the repository (keep ``--out`` outside
it: the run writes the prepared adaptation images to ``<out>/work/`` while it trains, and deletes them after).
LFW and Glint360K are for research use only. Protocol and results: docs/benchmark_real_faces.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS_IMAGES = REPO / "docs" / "images"

INT_FLAGS = ("steps", "batch_size", "lora_r", "num_threads", "calibration_images", "eval_batch_size")
FLOAT_FLAGS = (
    "learning_rate",
    "weight_decay",
    "degrade_fraction",
    "head_scale",
    "head_margin",
    "distill_weight",
    "distill_degrade_fraction",
)
FOLD_FLAGS = ("eval_folds", "validation_folds", "adapt_folds", "base_folds")


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--faces", default=None, help="folder holding lfw/ (and glint_celeb24/); required")
    p.add_argument(
        "--extra-sets", nargs="*", default=None, help="sub-folders of --faces joined by name (default: glint_celeb24)"
    )
    for name in FOLD_FLAGS:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, nargs="+", default=None, metavar="FOLD")
    p.add_argument("--adapt-min-images", dest="adapt_min_images", type=int, default=None)
    p.add_argument("--base-identities", default=None, help="file listing the base model's identities: checked disjoint")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "build-base",
        add_help=False,
        help="build the real-face base: distil dlib's ResNet into a face transformer (see build-base --help)",
    )
    run = sub.add_parser("run", help="train and evaluate every row for every seed; write the report")
    _add_data_flags(run)
    run.add_argument("--base", default=None, help="the real face base (a folder AutoModel loads); or 'standin-vit'")
    run.add_argument("--out", required=True, help="run folder (outside the repository): models, metrics, report")
    run.add_argument("--seeds", type=int, nargs="+", default=None)
    run.add_argument("--docs", action="store_true", help="also write real_faces_* files into docs/images/")
    run.add_argument("--quick", action="store_true", help="tiny random base, 1 seed, 4 steps, no reference")
    run.add_argument(
        "--methods", dest="rows", nargs="+", default=None, help="only these rows (e.g. pretrained full lora ours)"
    )
    run.add_argument("--references", nargs="*", default=None, help="reference rows (default: dlib; none: empty)")
    run.add_argument("--prepare", default=None, help="arcface (default; align extra) or center-crop")
    run.add_argument("--probe-px", dest="probe_size_px", type=int, nargs=2, default=None, metavar=("MIN", "MAX"))
    run.add_argument("--train-px", dest="train_size_px", type=int, nargs=2, default=None, metavar=("MIN", "MAX"))
    for name in INT_FLAGS:
        run.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=None)
    for name in FLOAT_FLAGS:
        run.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, default=None)
    run.add_argument(
        "--objective",
        dest="objectives",
        nargs="+",
        choices=("margin", "distill", "margin+distill"),
        default=None,
        help="training objective(s): each gives its own trained rows (default: margin; others are named "
        "<row>-<objective>, e.g. ours-distill)",
    )
    run.add_argument(
        "--targets",
        default=None,
        help="target modules of every adapter row: default (attention q/k/v), all-linear, or a named set of the base",
    )
    run.add_argument(
        "--groups",
        nargs="+",
        choices=("val", "eval"),
        default=None,
        help="groups to evaluate (default: val eval); 'val' alone for an ablation that never sees the evaluation folds",
    )
    run.add_argument(
        "--gated-modes",
        dest="gated_modes",
        nargs="+",
        choices=("gate", "proxy"),
        default=None,
        help="evaluation modes of our rows (default: gate proxy)",
    )
    run.add_argument("--head-init", dest="head_init", choices=("random", "imprint"), default=None)
    run.add_argument(
        "--gate-mode",
        dest="gate_mode",
        choices=("sigmoid", "linear"),
        default=None,
        help="the calibrated gate of our rows: sigmoid (default) or linear (a clamped ramp: q is exactly 1 or 0 "
        "for clearly sharp or degraded images)",
    )
    run.add_argument(
        "--validation-rows",
        choices=("all", "variants"),
        default=None,
        help="rows also evaluated on the validation folds (default: variants, the candidates for the best one)",
    )
    run.add_argument(
        "--flip-test",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="embed each image and its mirror, fused (default: on)",
    )
    run.add_argument(
        "--prepared-cache",
        dest="prepared_cache",
        default=None,
        help="folder outside the repository where the prepared (aligned) images are kept for later runs",
    )
    run.add_argument("--keep-work", action="store_true", help="keep <out>/work (prepared adaptation images)")
    run.add_argument(
        "--resume", action="store_true", help="reuse the rows an interrupted run of the same settings finished"
    )
    run.add_argument("--no-progress", action="store_true")
    split = sub.add_parser("split", help="print the identity groups and split sizes (reads no pixels)")
    _add_data_flags(split)
    budget = sub.add_parser(
        "budget", parents=[run], add_help=False, conflict_handler="resolve", help="time a few steps: what fits"
    )
    budget.add_argument("--minutes", type=float, default=75.0, help="the time budget of the whole run")
    budget.add_argument("--out", default=None, help="unused (the run's folder)")
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace):
    from petal_peft.benchmark import BenchmarkSettings, real_face_settings

    if not args.faces:
        raise ValueError("pass --faces: the folder holding lfw/ (e.g. /path/to/shared/faces).")
    fields = BenchmarkSettings.field_names()
    overrides = {k: v for k, v in vars(args).items() if v is not None and k in fields and k not in ("faces", "out")}
    if args.extra_sets is not None:
        overrides["extra_face_sets"] = tuple(args.extra_sets)
    for name in ("seeds", "rows", "gated_modes", "groups", "objectives", "references"):  # lists -> tuples
        if getattr(args, name, None) is not None:
            overrides[name] = tuple(getattr(args, name))
    if getattr(args, "no_progress", False):
        overrides["progress"] = False
    if getattr(args, "quick", False):
        quick = dict(base="random", seeds=(0,), steps=4, batch_size=16, calibration_images=64, references=())
        quick.update(prepare="center-crop")  # no alignment pass in a smoke run
        quick.update(probe_size_px=(5, 10), train_size_px=(5, 10))  # the random base's 32 px input
        overrides = {**quick, **overrides, "quick": True}
    elif args.command in ("run", "budget") and not overrides.get("base"):
        raise ValueError("pass --base: the real face base model folder (or 'standin-vit' for a dry run).")
    return real_face_settings(args.faces, getattr(args, "out", None) or "unused", **overrides)


def _check_out(out: str) -> None:
    path = Path(out).resolve()
    if path == REPO or REPO in path.parents:
        raise ValueError(
            f"--out {out} is inside the repository; the run writes prepared face images there while it trains: "
            "choose a folder outside it."
        )


def budget(settings, methods, plan, minutes: float) -> dict:
    """Time a few training steps and embedding batches with the real base; the steps that fit in ``minutes``."""
    import tempfile
    import time

    from PIL import Image

    from petal_peft.benchmark import build_preparation
    from petal_peft.benchmark.budget import compare_objective_steps, estimate_runtime, measure_costs, steps_for_budget
    from petal_peft.benchmark.data import degrade_images, stack_images
    from petal_peft.benchmark.models import prepare_base

    with tempfile.TemporaryDirectory() as tmp:
        base_model, ps = prepare_base(settings.base, Path(tmp), progress=False)
        size = int(ps["image_size"])
        prepare = build_preparation(settings.prepare, size)
        sample = plan.splits["eval"].sharp[:16]
        t = time.perf_counter()
        images = [prepare(Image.open(p).convert("RGB")) for p in sample]
        degrade_images(images, settings.capture_sizes("probe", size), seed=0)
        data_image_s = (time.perf_counter() - t) / len(sample)
        n_adapt = sum(len(v) for v in plan.adapt.values())
        costs = measure_costs(
            settings, methods, base_model, ps, len(plan.adapt), stack_images(images, size), num_images=n_adapt
        )
        ratios = None
        if len(settings.objectives) > 1 and "margin" in settings.objectives:  # interleaved steps, same batch
            ratios = compare_objective_steps(settings, base_model, ps, len(plan.adapt), n_adapt)
    costs.data_image_s = data_image_s
    summary = plan.summary()
    counts = {name: summary[name]["probes"] + summary[name]["sharp_images"] for name in ("val", "eval")}
    counts["data"] = summary["adapt"]["images"] + counts["val"] + counts["eval"]
    fits = steps_for_budget(settings, methods, costs, counts, 60.0 * minutes)
    return {
        "costs": costs.to_dict(),
        "objective_steps": ratios,
        "images": counts,
        f"estimate_at_{settings.steps}_steps_s": estimate_runtime(settings, methods, costs, counts),
        f"steps_that_fit_{minutes:g}_min": fits,
        f"estimate_at_{fits}_steps_s": estimate_runtime(settings, methods, costs, counts, steps=fits),
        "batch_size": settings.batch_size,
        "rows": [m.name for m in methods],
        "seeds": list(settings.seeds),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["build-base"]:  # the builder keeps its own script and flags
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from build_real_base import main as build_base

        return build_base(argv[1:])
    args = parse_args(argv)
    try:
        settings = settings_from_args(args)
        from petal_peft.benchmark import plan_real_faces

        plan = plan_real_faces(settings)  # reads the pair list and the folder tree: bad --faces fails here
        if args.command == "split":
            print(json.dumps(plan.summary(), indent=2))
            return 0
        from petal_peft.benchmark.methods import select_methods

        methods = select_methods(settings)
        if args.command == "budget":
            print(json.dumps(budget(settings, methods, plan, args.minutes), indent=2))
            return 0
        _check_out(settings.out)
        from petal_peft.benchmark import run_benchmark, run_summary, write_outputs

        results = run_benchmark(settings, methods)
        written = write_outputs(results, settings.out, DOCS_IMAGES if args.docs else None, prefix="real_faces")
    except (ValueError, TypeError, KeyError, OSError, ImportError) as err:
        text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"real_faces.py {args.command}: error: {' '.join(str(text).split())}", file=sys.stderr)
        return 2
    print(run_summary(results, written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
