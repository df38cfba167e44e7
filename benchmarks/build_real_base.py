"""Build the real-face base (a face transformer distilled from dlib's ResNet) and print its accuracy next to the
teacher's, measured in the same run on real faces (LFW View-2 pairs of folds 0-2).

    python benchmarks/real_faces.py build-base --faces ../shared/faces --out DIR [--cache DIR] [--plot PNG]

Needs the ``align`` extra (dlib, for alignment; the teacher itself runs in torch) and the face photos (LFW View-2
with pairs_view2.csv, optionally Glint360K celebrities): research use only, never copied into the repository.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from petal_peft.files import write_file_atomic  # noqa: E402
from petal_peft.recipes.real_base import RECORD_NAME, RealBaseSettings, build_real_face_base  # noqa: E402


def plot_curve(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(r["step"], r["eval_accuracy"]) for r in record["log"] if "eval_accuracy" in r]
    teacher = record["metrics"]["teacher_dlib_resnet_torch"]["balanced_order"]["accuracy"]
    student = record["metrics"]["student_fp16_weights"]["balanced_order"]["accuracy"]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    if points:
        ax.plot(*zip(*points), marker="o", label="student, validation pairs (LFW fold 3)")
    ax.axhline(teacher, color="k", ls="--", label=f"teacher (dlib ResNet), eval pairs: {teacher:.1f} %")
    ax.axhline(student, color="C1", ls=":", label=f"student (final), eval pairs: {student:.1f} %")
    ax.set_xlabel("distillation step")
    ax.set_ylabel("10-fold verification accuracy (%)")
    ax.set_title("Real faces (LFW View-2): distilling dlib's ResNet into a face transformer", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    write_file_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faces", required=True, help="folder with lfw/ (and optionally glint_celeb24/)")
    p.add_argument("--out", required=True, help="output folder for the base (written atomically)")
    p.add_argument("--cache", help="keep the aligned images here between runs (outside the repository)")
    p.add_argument("--plot", help="write the training curve (PNG) here, e.g. docs/images/real_base_curve.png")
    p.add_argument("--settings", type=json.loads, default={}, help="JSON overrides of RealBaseSettings fields")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    fields = {f.name for f in dataclasses.fields(RealBaseSettings)}
    unknown = sorted(set(args.settings) - fields)
    if unknown:
        p.error(f"unknown settings {unknown}; known: {sorted(fields)}")
    started = time.time()
    try:
        settings = RealBaseSettings(**args.settings)
        record = build_real_face_base(
            args.faces, args.out, settings, cache_dir=args.cache, progress=not args.no_progress
        )
    except (ValueError, TypeError, OSError, ImportError) as err:
        print(f"build-base: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    wall = time.time() - started
    m = record["metrics"]
    print(f"\nReal faces: LFW View-2 pairs of folds 0-2 ({m['student']['num_folds']}-fold, 1,800 pairs, unseen people)")
    print(f"{'model':<44} {'LFW order':>14} {'balanced folds':>16} {'AUC':>7}")
    for name, key in (
        ("base (fp16 file, as loaded)", "student_fp16_weights"),
        ("base (fp32)", "student"),
        ("teacher: dlib ResNet (torch port)", "teacher_dlib_resnet_torch"),
    ):
        x = m[key]
        b = x["balanced_order"]
        print(
            f"{name:<44} {x['accuracy']:6.2f} ± {x['accuracy_std']:4.2f} "
            f"{b['accuracy']:8.2f} ± {b['accuracy_std']:4.2f} {x['auc']:7.2f}"
        )
    t = record["timings"]
    print(
        f"wall {wall / 60:.1f} min (align {t['align_s']:.0f} s, teacher eval {t['teacher_eval_s']:.0f} s, "
        f"distill {t['distill_s']:.0f} s, eval {t['student_eval_s']:.0f} s); record: {Path(args.out) / RECORD_NAME}"
    )
    if args.plot:
        plot_curve(record, Path(args.plot))
        print(f"curve: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
