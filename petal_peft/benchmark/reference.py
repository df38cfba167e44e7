"""Reference rows: face models that are not trained here, evaluated on exactly the same images.

A reference model maps uint8 images ``[N, 3, S, S]`` (the prepared sharp images and the degraded probes of
the split) to embeddings ``[N, D]``. Built-in: ``"dlib"``, dlib's ResNet face descriptor (the teacher the
real face base is distilled from), which needs the ``align`` extra (dlib-bin and face-recognition-models; in a
petal-peft clone: ``pip install -e '.[align]'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..registry import Registry

__all__ = ["REFERENCE_MODELS", "DlibFaceDescriptor", "dlib_model_files"]


#: name -> ``factory(num_workers=..., progress=...)`` returning an object with ``embed(images) -> [N, D]``,
#: ``description`` and ``stats()``
REFERENCE_MODELS = Registry("reference model")


def dlib_model_files() -> tuple[str, str]:
    """(5-point landmark model, ResNet descriptor model) of the installed face-recognition-models package."""
    from ..align.model_files import dlib_model_file
    from ..extras import require

    require("dlib", "align", "the dlib reference row")
    return (
        str(dlib_model_file("shape_predictor_5_face_landmarks.dat")),
        str(dlib_model_file("dlib_face_recognition_resnet_model_v1.dat")),
    )


_WORKER: dict[str, Any] = {}


def _load_dlib() -> dict[str, Any]:
    if not _WORKER:
        import dlib

        shape_file, descriptor_file = dlib_model_files()
        _WORKER.update(
            dlib=dlib,
            detector=dlib.get_frontal_face_detector(),
            shape=dlib.shape_predictor(shape_file),
            descriptor=dlib.face_recognition_model_v1(descriptor_file),
        )
    return _WORKER


def _describe_chunk(args: tuple[np.ndarray, bool]) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors [n, 128] and whether dlib's HOG detector found the face, for images [n, H, W, 3]."""
    images, detect = args
    m = _load_dlib()
    dlib = m["dlib"]
    out = np.zeros((len(images), 128), dtype=np.float32)
    found = np.zeros(len(images), dtype=bool)
    for i, img in enumerate(images):
        img = np.ascontiguousarray(img)
        h, w = img.shape[:2]
        box = dlib.rectangle(0, 0, w - 1, h - 1)  # fallback: the whole crop is the face
        if detect:
            dets = m["detector"](img, 1)
            if len(dets):
                box = max(dets, key=lambda r: r.width() * r.height())
                found[i] = True
        shape = m["shape"](img, box)
        out[i] = np.asarray(m["descriptor"].compute_face_descriptor(img, shape, 0, 0.25), dtype=np.float32)
    return out, found


@REFERENCE_MODELS.register("dlib")
class DlibFaceDescriptor:
    """dlib's ResNet descriptor with its own alignment: HOG face detector (the whole crop when it finds no
    face), 5 landmarks, a 150 px chip with padding 0.25, no jitter; one image, no flip. ~7 images/s per core."""

    description = "dlib ResNet face descriptor (the distillation teacher; not trained here)"

    def __init__(self, num_workers: int = 1, progress: bool = True, detect: bool = True, chunk: int = 32) -> None:
        dlib_model_files()  # fail early, with the install line
        self.num_workers = max(1, int(num_workers))
        self.progress = progress
        self.detect = detect
        self.chunk = chunk
        self.images = 0
        self.detected = 0

    def stats(self) -> dict[str, Any]:
        return {"images": self.images, "face_detected": self.detected}

    def embed(self, images: torch.Tensor, desc: str = "dlib descriptor") -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N, 3, H, W], got {images.dtype} {tuple(images.shape)}.")
        hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
        chunks: Sequence[tuple[np.ndarray, bool]] = [
            (hwc[i : i + self.chunk], self.detect) for i in range(0, len(hwc), self.chunk)
        ]
        bar = tqdm(total=len(hwc), desc=desc, disable=not self.progress)
        results = []
        if self.num_workers == 1 or len(chunks) == 1:
            for c in chunks:
                results.append(_describe_chunk(c))
                bar.update(len(c[0]))
        else:
            import multiprocessing

            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
            with ProcessPoolExecutor(self.num_workers, mp_context=context) as pool:
                for c, r in zip(chunks, pool.map(_describe_chunk, chunks)):
                    results.append(r)
                    bar.update(len(c[0]))
        bar.close()
        self.images += len(hwc)
        self.detected += int(sum(int(r[1].sum()) for r in results))
        return torch.from_numpy(np.concatenate([r[0] for r in results]))
