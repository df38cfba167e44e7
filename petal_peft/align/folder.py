"""Align every image of a folder tree into a mirror tree, with a progress bar and a report of faces not found.

Each image keeps its relative path and file name (so pair lists such as LFW's ``pairs_view2.csv`` still apply; other
regular files are copied unchanged). ``align_report.json`` in the output folder records the settings, the counts,
and every image where no face was found together with what was done with it (see :data:`~.aligner.FALLBACKS`).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from petal_peft.align.aligner import FaceAligner
from petal_peft.align.landmarks import import_dlib
from petal_peft.files import write_file_atomic, write_json_atomic
from petal_peft.images import IMAGE_EXTENSIONS, ImageReadError, read_image

__all__ = ["AlignReport", "align_folder", "align_images", "REPORT_NAME"]

REPORT_NAME = "align_report.json"
#: written first into the output folder, removed when the report is written: an interrupted run's folder
#: carries it, so a rerun with the same source and settings continues there instead of being refused
IN_PROGRESS_NAME = ".petal-peft-align.json"
#: output format per file type (aligned faces keep their file's type)
_SAVE_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".bmp": "BMP",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".pgm": "PPM",
    ".ppm": "PPM",
}


@dataclass
class AlignReport:
    """What :func:`align_folder` did; ``no_face`` lists ``{"image", "fallback"}`` for each image without a face."""

    source: str
    destination: str
    settings: dict[str, Any]
    images: int = 0
    detected: int = 0
    multiple_faces: int = 0
    no_face: list[dict[str, str]] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    copied_files: int = 0

    def summary(self) -> str:
        return (
            f"{self.images} image(s): {self.detected} face(s) detected, {len(self.no_face)} without a face "
            f"({self.settings['fallback']} fallback), {len(self.unreadable)} unreadable; "
            f"report: {Path(self.destination) / REPORT_NAME}"
        )


def _save_image(array, path: Path, jpeg_quality: int) -> None:
    image = Image.fromarray(array)
    suffix = path.suffix.lower()
    fmt = _SAVE_FORMATS[suffix]
    if suffix == ".pgm":  # a grey-map file holds one channel
        image = image.convert("L")
    kwargs = {"quality": jpeg_quality} if fmt in ("JPEG", "WEBP") else {}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            image.save(f, format=fmt, **kwargs)

    write_file_atomic(path, write)


_ALIGNER: FaceAligner | None = None


def _init_worker(settings: dict[str, Any], threads: int | None = None) -> None:
    global _ALIGNER
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    _ALIGNER = FaceAligner(**settings)


def _align_one(job: tuple[str, str, str, int]) -> dict[str, Any]:
    src, dst, rel, jpeg_quality = job
    assert _ALIGNER is not None
    try:
        image = read_image(Path(src) / rel, name=rel)
    except ImageReadError as err:  # unreadable, broken link, or over the size cap (decompression bomb)
        return {"image": rel, "error": str(err)}
    face = _ALIGNER(image)
    if face.image is not None:
        out = Path(dst) / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        _save_image(face.image, out, jpeg_quality)
    return {"image": rel, "method": face.method, "faces": face.landmarks.num_faces}


def _align_array(path: str) -> tuple[Any, str]:
    assert _ALIGNER is not None
    face = _ALIGNER(read_image(path))
    return face.image, face.method


def align_images(
    paths: list[str | os.PathLike],
    *,
    size: int = 112,
    template: str = "arcface",
    margin: int = 0,
    padding: float = 0.25,
    workers: int = 1,
    progress: bool = True,
    desc: str = "aligning",
) -> tuple[Any, list[str]]:
    """Align images in memory: (uint8 array [N, S, S, 3] with S = size + 2 * margin, method per image).

    No image is skipped: where no face is found the whole-image fallback is used (method ``"whole-image"``).
    The result does not depend on ``workers``.
    """
    import numpy as np

    settings = {"size": size, "template": template, "margin": margin, "padding": padding, "fallback": "whole-image"}
    FaceAligner.check_settings(**settings)
    import_dlib()
    jobs = [str(p) for p in paths]
    out = np.zeros((len(jobs), size + 2 * margin, size + 2 * margin, 3), np.uint8)
    methods: list[str] = []
    bar = tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress)
    pool = None
    try:
        if workers == 1:
            _init_worker(settings)
            results: Iterator[tuple[Any, str]] = map(_align_array, jobs)
        else:
            pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(settings, 1))
            results = pool.imap(_align_array, jobs, chunksize=16)
        for i, (image, method) in enumerate(results):
            out[i] = image
            methods.append(method)
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    return out, methods


def _walk(root: Path) -> Iterator[tuple[str, bool]]:
    """(relative path, is_image) of every regular file under root, in sorted order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            yield rel, Path(name).suffix.lower() in IMAGE_EXTENSIONS


def align_folder(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    size: int = 112,
    template: str = "arcface",
    margin: int = 0,
    padding: float = 0.25,
    fallback: str = "whole-image",
    workers: int = 1,
    jpeg_quality: int = 95,
    overwrite: bool = False,
    progress: bool = True,
) -> AlignReport:
    """Align every image under ``source`` into ``destination`` (same relative paths); returns the report.

    ``workers`` > 1 aligns in that many processes. A non-empty ``destination`` is refused unless ``overwrite``,
    or unless it holds an interrupted run of the same source and settings, which is then redone there. Images
    that cannot be read (a decompression bomb included) are listed in the report's ``unreadable``.
    """
    from petal_peft.outputs import check_output_folder

    source, destination = Path(source), Path(destination)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such folder to align.")
    if source.resolve() == destination.resolve() or source.resolve() in destination.resolve().parents:
        raise ValueError(f"the output folder {destination} must not be the input folder or inside it.")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}.")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}.")
    settings = {"size": size, "template": template, "margin": margin, "padding": padding, "fallback": fallback}
    FaceAligner.check_settings(**settings)
    run = {"source": str(source.resolve()), "settings": {**settings, "jpeg_quality": jpeg_quality}}
    interrupted = _interrupted_run(destination)
    if interrupted is not None and interrupted != run and not overwrite:
        raise FileExistsError(
            f"{destination} holds an interrupted align of {interrupted.get('source')} with settings "
            f"{interrupted.get('settings')}: rerun that command to finish it, or pass --overwrite to align into it "
            "with these settings."
        )
    check_output_folder(destination, overwrite=overwrite or interrupted == run, flag="the output folder")
    import_dlib()  # fail here, with the install hint, rather than in a worker
    files = list(_walk(source))
    images = [rel for rel, is_image in files if is_image]
    if not images:
        raise FileNotFoundError(f"{source}: no images ({', '.join(IMAGE_EXTENSIONS)}) found.")
    destination.mkdir(parents=True, exist_ok=True)
    write_json_atomic(destination / IN_PROGRESS_NAME, run)
    report = AlignReport(str(source), str(destination), {**settings, "jpeg_quality": jpeg_quality})
    for rel, is_image in files:
        if not is_image:
            (destination / rel).parent.mkdir(parents=True, exist_ok=True)
            write_file_atomic(destination / rel, lambda tmp, rel=rel: shutil.copyfile(source / rel, tmp))
            report.copied_files += 1
    jobs = [(str(source), str(destination), rel, jpeg_quality) for rel in images]
    bar = tqdm(total=len(jobs), desc="aligning", unit="img", disable=not progress)
    if workers == 1:
        _init_worker(settings)
        results: Iterator[dict[str, Any]] = map(_align_one, jobs)
        pool = None
    else:
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(settings, 1))
        results = pool.imap(_align_one, jobs, chunksize=16)
    try:
        for r in results:
            bar.update(1)
            report.images += 1
            if "error" in r:
                report.unreadable.append(r)
            elif r["method"] == "detected":
                report.detected += 1
                report.multiple_faces += r["faces"] > 1
            else:
                report.no_face.append({"image": r["image"], "fallback": r["method"]})
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    write_json_atomic(destination / REPORT_NAME, asdict(report))
    (destination / IN_PROGRESS_NAME).unlink(missing_ok=True)
    return report


def _interrupted_run(destination: Path) -> dict[str, Any] | None:
    """The source and settings of an align that was interrupted in ``destination`` (None if there is none)."""
    import json

    try:
        return json.loads((destination / IN_PROGRESS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
