"""``petal-peft embed`` / ``search`` / ``verify``: an adapted face model on folders of images.

``petal-peft embed --model BASE [--adapter DIR | --proxy-encoders DIR] --images DIR --out FILE``
``petal-peft search --gallery FILE (--probes FILE | --images DIR --model ...) [--top-k 5] [--threshold T | --report R]``
``petal-peft verify --report REPORT.json (IMAGE_A IMAGE_B | --pairs LIST) (--model ... | --embeddings FILE)``
"""

from __future__ import annotations

import argparse
import sys

from .common import add_json_argument, add_output_arguments, print_json
from .face_encoder import (
    add_encoder_arguments,
    build_encoder,
    need_model,
    reading_options,
    report_skipped,
    skip_argument,
)


# ------------------------------------------------------------------------------------------------ embed
def run_embed(args: argparse.Namespace) -> int:
    from petal_peft.inference import embed_folder, index_paths
    from petal_peft.inference.embed import check_embed_output

    check_embed_output(args.out, overwrite=args.overwrite)  # before the model is loaded
    index = embed_folder(
        args.images,
        args.out,
        build_encoder(args),
        chunk_size=args.chunk_size,
        overwrite=args.overwrite,
        restart=args.restart,
        **reading_options(args),
    )
    tensors, document = index_paths(args.out)
    report_skipped(index, f"{document} (skipped_images)")
    quality = ", ".join(sorted(index.quality)) or "no quality estimator"
    print(
        f"{len(index)} images of {len(index.identity_names)} identities, {index.dim}-d embeddings "
        f"({index.info['encoder']}; {quality})"
    )
    print(f"embeddings: {tensors}\nindex: {document}")
    return 0


# ------------------------------------------------------------------------------------------------ search
def _search_threshold(args: argparse.Namespace, gallery) -> tuple[float | None, str | None]:
    """(cosine threshold, where it came from): --threshold, else the report's verification threshold, else
    None (closed-set search)."""
    from petal_peft.cli import CliError
    from petal_peft.inference import check_threshold_applies, threshold_from_report

    if args.threshold is not None:
        if not -1.0 <= args.threshold <= 1.0:
            raise CliError(f"--threshold is a cosine similarity in [-1, 1], got {args.threshold}.")
        return float(args.threshold), "threshold given on the command line (cosine similarity)"
    if args.report is None:
        return None, None
    threshold = threshold_from_report(args.report, mode=args.report_mode, encoder=gallery.info.get("encoder"))
    check_threshold_applies(threshold, gallery.info)
    return threshold.cosine, threshold.describe()


def run_search(args: argparse.Namespace) -> int:
    from petal_peft.cli import CliError
    from petal_peft.files import write_json_atomic
    from petal_peft.inference import EmbeddingIndex, embed_images, search
    from petal_peft.outputs import check_output_file

    if (args.probes is None) == (args.images is None):
        raise CliError("give the probes either embedded (--probes FILE) or as images (--images DIR with --model).")
    if args.out:
        check_output_file(args.out, overwrite=args.overwrite)  # before anything is loaded or embedded
    gallery = EmbeddingIndex.load(args.gallery)
    threshold, source = _search_threshold(args, gallery)
    if args.probes is not None:
        probes = EmbeddingIndex.load(args.probes)
    else:
        need_model(args, "--images")
        if args.encoder is None and args.proxy_encoders is not None:
            args.encoder = "probe"  # probes are the low-quality side
        probes = embed_images(args.images, build_encoder(args), **reading_options(args))
        report_skipped(probes, "the results (probes.skipped_images)" if args.out else "this message")
    result = search(gallery, probes, top_k=args.top_k, threshold=threshold, threshold_source=source)
    if args.out:
        write_json_atomic(args.out, result.to_json())
    if args.json:
        print_json(result.to_json())
    elif not args.out or args.print_all:
        if source:
            print(source)
        for r in result.results:
            cells = "\t".join(f"{m.identity} ({m.score:.3f})" for m in r.matches)
            answer = f"{r.answer}\t" if threshold is not None else ""
            print(f"{r.probe_file}\t{answer}{cells}")
    rates = result.rates()
    summary = (
        f"{len(result.results)} probes against {len(gallery)} gallery images of "
        f"{len(gallery.identity_names)} identities"
    )
    if threshold is not None:
        unknown = sum(r.answer == "unknown" for r in result.results)
        summary += f"; {unknown} answered unknown (best score below {threshold:.4g})"
    if rates:
        summary += f"; {result.num_mated} probes have their identity in the gallery: " + ", ".join(
            f"{k} {v:.1f}%" for k, v in rates.items()
        )
    print(summary, file=sys.stderr if args.json or not args.out else sys.stdout)
    if args.out:
        print(f"results: {args.out}", file=sys.stderr if args.json else sys.stdout)
    return 0


# ------------------------------------------------------------------------------------------------ verify
def run_verify(args: argparse.Namespace) -> int:
    import os

    import numpy as np
    import torch

    from petal_peft.cli import CliError
    from petal_peft.files import write_json_atomic
    from petal_peft.inference import (
        check_threshold_applies,
        embed_paths,
        pair_distances,
        read_pairs,
        threshold_from_report,
    )

    if bool(args.images) == bool(args.pairs):
        raise CliError("give two images (IMAGE_A IMAGE_B) or a pair list (--pairs FILE), not both.")
    if args.images and len(args.images) != 2:
        raise CliError(f"give exactly two images to compare, got {len(args.images)}.")
    if args.embeddings and args.model:
        raise CliError("give either --embeddings (already embedded) or --model (embed now), not both.")
    if (args.report is None) == (args.threshold is None):
        raise CliError("give the threshold's source: --report REPORT.json (from petal-peft eval), or --threshold.")
    if args.out:
        from petal_peft.outputs import check_output_file

        check_output_file(args.out, overwrite=args.overwrite)  # before anything is loaded or embedded
    pairs, labels = ([(args.images[0], args.images[1])], None) if args.images else read_pairs(args.pairs)

    if args.embeddings:
        from petal_peft.inference import EmbeddingIndex

        index = EmbeddingIndex.load(args.embeddings)
        info = index.info
        rows_a = [index.row_of(a) for a, _ in pairs]
        rows_b = [index.row_of(b) for _, b in pairs]
        emb_a, emb_b = index.embeddings[rows_a], index.embeddings[rows_b]
    else:
        need_model(args, "verify")
        base = os.path.dirname(os.path.abspath(args.pairs)) if args.pairs else os.getcwd()
        pairs_abs = [tuple(p if os.path.isabs(p) else os.path.join(base, p) for p in pair) for pair in pairs]
        paths = sorted({p for pair in pairs_abs for p in pair})
        if args.encoder is None and args.proxy_encoders is not None:
            args.encoder = "gallery"  # eval's default pair role; checked against the report below
        encoder = build_encoder(args)
        info = encoder.info
        if args.report:  # refuse a threshold that does not apply before embedding anything
            check_threshold_applies(
                threshold_from_report(args.report, mode=args.report_mode, encoder=info.get("encoder")), info
            )
        embedded = embed_paths(
            paths, encoder, align=args.align, num_workers=args.num_workers, progress=not args.no_progress
        )["embeddings"]
        row = {p: i for i, p in enumerate(paths)}
        emb_a = embedded[[row[a] for a, _ in pairs_abs]]
        emb_b = embedded[[row[b] for _, b in pairs_abs]]

    if args.report:
        threshold = threshold_from_report(args.report, mode=args.report_mode, encoder=info.get("encoder"))
        if args.embeddings:  # embedded now: checked above, before embedding
            check_threshold_applies(threshold, info)
        value, source = threshold.value, threshold.describe()
    else:
        value, source = float(args.threshold), "threshold given on the command line (squared L2)"
        if not 0 < value <= 4:
            raise CliError(f"--threshold is a squared L2 distance between unit embeddings, in (0, 4]; got {value}.")
    distances = pair_distances(torch.as_tensor(emb_a), torch.as_tensor(emb_b))
    same = distances < value
    text = sys.stderr if args.json else sys.stdout  # with --json, stdout holds the JSON document alone
    print(source, file=text)
    if not args.json:
        for (a, b), d, s in zip(pairs, distances, same):
            print(f"{'same' if s else 'different'}\t{d:.4f}\t{a}\t{b}")
    result: dict = {
        "threshold": value,
        "threshold_source": source,
        "rule": "same when the squared L2 distance of the unit embeddings is below the threshold",
        "pairs": [
            {"a": a, "b": b, "distance": float(d), "same": bool(s)} for (a, b), d, s in zip(pairs, distances, same)
        ],
    }
    if labels is not None:
        truth = np.asarray(labels, dtype=bool)
        accuracy = 100.0 * float((same == truth).mean())
        result["accuracy_percent"] = accuracy
        print(f"accuracy {accuracy:.2f}% over {len(pairs)} labelled pairs", file=text)
    if args.out:
        write_json_atomic(args.out, result)
        print(f"decisions: {args.out}", file=text)
    if args.json:
        print_json(result)
    return 0


# ------------------------------------------------------------------------------------------------ register
def register(parser: argparse.ArgumentParser) -> None:
    """Fill in the parser of ``embed``, ``search`` or ``verify`` (the one named ``parser.command_name``)."""
    {"embed": _embed_arguments, "search": _search_arguments, "verify": _verify_arguments}[parser.command_name](parser)


def _embed_arguments(embed: argparse.ArgumentParser) -> None:
    embed.description = (
        "Flip-fused, L2-normalised embeddings of every image below --images, with identities from folder names, "
        "quality scores and gate values; resumes an interrupted run with the same settings."
    )
    embed.add_argument("--images", required=True, help="folder of images (identity = top folder below it)")
    embed.add_argument("--out", required=True, help="output X.safetensors (X.json is written next to it)")
    add_encoder_arguments(embed, model_required=True)
    embed.add_argument("--chunk-size", type=int, default=1024, help="images per saved chunk (the unit of resuming)")
    embed.add_argument("--overwrite", action="store_true", help="replace an existing finished index")
    embed.add_argument("--restart", action="store_true", help="discard an interrupted run made with other settings")
    skip_argument(embed, "images")
    embed.set_defaults(func=run_embed)


def _report_arguments(p: argparse.ArgumentParser, report: str) -> None:
    """``--report`` (an eval report whose threshold applies) and ``--report-mode`` (which mode's)."""
    p.add_argument("--report", help=report)
    p.add_argument("--report-mode", choices=("plain", "gate", "proxy"), help="which mode's threshold to use")


def _search_arguments(search: argparse.ArgumentParser) -> None:
    search.description = (
        "Rank the identities of an embedded gallery for each probe by cosine similarity of their best gallery "
        "image. Probes: an embedded index (--probes) or a folder embedded now (--images with --model)."
    )
    search.add_argument("--gallery", required=True, help="gallery index written by petal-peft embed")
    search.add_argument("--probes", help="probe index written by petal-peft embed")
    search.add_argument("--images", help="folder of probe images to embed now (needs --model)")
    search.add_argument("--top-k", type=int, default=5, help="identities listed per probe (default 5)")
    search.add_argument(
        "--threshold",
        type=float,
        help="open-set search: a probe whose best identity scores below this cosine similarity is answered "
        "'unknown' (default: from --report, else none: every probe gets its best identity)",
    )
    _report_arguments(
        search,
        "JSON report of petal-peft eval --benchmark verification: its threshold (as a cosine similarity, "
        "1 - d/2) becomes the default --threshold",
    )
    add_output_arguments(search, "write all results as JSON here (an existing file needs --overwrite)")
    skip_argument(search, "probe images (--images)")
    search.add_argument("--print-all", action="store_true", help="print every probe's matches even with --out")
    add_json_argument(search)
    add_encoder_arguments(search, model_required=False)
    search.set_defaults(func=run_search)


def _verify_arguments(verify: argparse.ArgumentParser) -> None:
    verify.description = (
        "Decide whether image pairs show the same person: squared L2 distance of the unit embeddings below the "
        "threshold that petal-peft eval --benchmark verification measured (results.<mode>.threshold)."
    )
    verify.add_argument("images", nargs="*", metavar="IMAGE", help="two images to compare")
    verify.add_argument(
        "--pairs",
        help="pair list: '<image_a> <image_b> [label]' per line, separated by tabs, commas or (paths without "
        "spaces) spaces; LFW's 'fold,label,img1,img2' CSV too",
    )
    verify.add_argument("--embeddings", help="index written by petal-peft embed holding the pairs' images")
    _report_arguments(verify, "JSON report of petal-peft eval --benchmark verification")
    verify.add_argument("--threshold", type=float, help="squared L2 threshold instead of a report")
    add_output_arguments(verify, "write the decisions as JSON here (an existing file needs --overwrite)")
    add_json_argument(verify)
    add_encoder_arguments(verify, model_required=False)
    verify.set_defaults(func=run_verify)
