"""Embedding every face image below a folder, in chunks that survive an interruption.

With ``skip_bad_images`` an image that cannot be read (corrupt, a broken symbolic link, over the size cap) is
left out and listed in the index's ``skipped_images``; without it the run stops naming the image, and a rerun
with the same settings (the image fixed or removed) keeps every finished chunk whose images did not change.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from petal_peft.images import IMAGE_EXTENSIONS, list_image_files, read_image
from petal_peft.outputs import OutputPathError, check_writable

from .align import AlignedTransform, load_aligner
from .encoders import FaceEncoder
from .index import INDEX_FORMAT, ChunkStore, EmbeddingIndex, identities_of, index_paths

DEFAULT_CHUNK_SIZE = 1024


def list_face_images(images: str | os.PathLike) -> tuple[Path, list[str]]:
    """(root, image paths relative to it, sorted): every image (:data:`~petal_peft.images.IMAGE_EXTENSIONS`)
    below ``images``."""
    root = Path(images)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files = [os.path.relpath(p, root) for p in list_image_files(root)]
    if not files:
        raise ValueError(f"{root} contains no images ({', '.join(IMAGE_EXTENSIONS)}) in it or below it.")
    return root.resolve(), files


def check_embed_output(out: str | os.PathLike, *, overwrite: bool) -> tuple[Path, Path]:
    """Before any model is loaded: the index files (``X.safetensors``, ``X.json``) can be written, and do not
    exist yet unless ``overwrite`` (or an interrupted run of them is waiting to be resumed)."""
    tensor_path, json_path = index_paths(out)
    for path in (tensor_path, json_path):
        if path.is_dir():
            raise OutputPathError(f"--out {path} is a folder, not a file; name the index file (e.g. gallery).")
    check_writable(tensor_path)
    store_folder = tensor_path.with_name(tensor_path.name + ".parts")
    if (tensor_path.exists() or json_path.exists()) and not overwrite and not store_folder.exists():
        raise OutputPathError(f"--out {tensor_path} already exists; pass --overwrite to replace it.")
    return tensor_path, json_path


class _FaceFiles(Dataset):
    """``(pixel_values, problem)`` per image file: problem is "" when read, else why it could not be (and the
    pixels are zeros) when ``skip_bad`` is on; without it a bad image raises, naming it."""

    def __init__(self, root: Path, files: Sequence[str], transform: Callable[[Any], torch.Tensor], size, skip_bad):
        self.root, self.files, self.transform = root, list(files), transform
        self.size, self.skip_bad = tuple(size), bool(skip_bad)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        name = self.files[index]
        try:
            return self.transform(read_image(self.root / name, name=str(self.root / name))), ""
        except ValueError as err:  # ImageReadError, or no face found by --align
            if not self.skip_bad:
                raise
            return torch.zeros(3, *self.size), str(err) or type(err).__name__


def _transform(encoder: FaceEncoder, align: bool) -> Callable[[Any], torch.Tensor]:
    if not align:
        return encoder.transform
    return AlignedTransform(encoder.transform, load_aligner(max(encoder.transform.size)))


def _embed_files(
    root: Path,
    files: Sequence[str],
    encoder: FaceEncoder,
    transform: Callable[[Any], torch.Tensor],
    num_workers: int,
    bar: Any,
    skip_bad: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors of the images read, in order; ``{file: problem}`` of those skipped)."""
    dataset = _FaceFiles(root, files, transform, encoder.transform.size, skip_bad)
    loader = DataLoader(dataset, batch_size=encoder.batch_size, shuffle=False, num_workers=num_workers)
    parts, skipped, start = [], {}, 0
    for pixels, problems in loader:
        good = torch.tensor([not p for p in problems], dtype=torch.bool)
        skipped.update((files[start + i], p) for i, p in enumerate(problems) if p)
        if bool(good.any()):
            parts.append(encoder.embed_batch(pixels[good] if not bool(good.all()) else pixels))
        start += len(problems)
        bar.update(len(problems))
    if not parts:
        return {}, skipped
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}, skipped


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("petal-peft")
    except PackageNotFoundError:
        return "unknown"


def _index_info(root: Path, encoder: FaceEncoder, align: bool) -> dict[str, Any]:
    return {
        "images_root": str(root),
        "identity_rule": "top folder below images_root; an image directly in it is its own identity (file stem)",
        "embedding": "flip-fused, L2-normalised" if encoder.extractor.flip else "L2-normalised (no flip test)",
        "align": bool(align),
        **encoder.info,
        "petal_peft_version": _version(),
    }


def _build_index(
    files: list[str], tensors: dict[str, torch.Tensor], info: dict[str, Any], skipped: dict[str, str] | None = None
) -> EmbeddingIndex:
    skipped = skipped or {}
    if not tensors:
        raise ValueError(f"none of the {len(files)} images could be read, e.g. {next(iter(skipped.values()), '?')}")
    kept = [f for f in files if f not in skipped]
    if skipped:
        info = {
            **info,
            "num_skipped": len(skipped),
            "skipped_images": [{"image": f, "problem": skipped[f]} for f in files if f in skipped],
        }
    quality = {k: v for k, v in tensors.items() if k not in ("embeddings", "norms")}
    return EmbeddingIndex(tensors["embeddings"], kept, identities_of(kept), tensors["norms"], quality, info)


def embed_images(
    images: str | os.PathLike,
    encoder: FaceEncoder,
    *,
    align: bool = False,
    num_workers: int = 0,
    progress: bool = True,
    skip_bad_images: bool = False,
) -> EmbeddingIndex:
    """Embed every image below ``images`` in memory (no files written): what ``search`` does with probe folders.
    ``skip_bad_images``: leave out images that cannot be read, listed in ``info["skipped_images"]``."""
    root, files = list_face_images(images)
    transform = _transform(encoder, align)
    with tqdm(total=len(files), desc=f"embedding ({encoder.encoder})", unit="img", disable=not progress) as bar:
        tensors, skipped = _embed_files(root, files, encoder, transform, num_workers, bar, skip_bad_images)
    return _build_index(files, tensors, _index_info(root, encoder, align), skipped)


def embed_paths(
    paths: Sequence[str | os.PathLike],
    encoder: FaceEncoder,
    *,
    align: bool = False,
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Rows of the index (embeddings, norms, quality) for a list of image files, in that order."""
    files = [os.path.abspath(os.fspath(p)) for p in paths]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) not found, e.g. {missing[:3]}")
    transform = _transform(encoder, align)
    with tqdm(total=len(files), desc=f"embedding ({encoder.encoder})", unit="img", disable=not progress) as bar:
        return _embed_files(Path("/"), files, encoder, transform, num_workers, bar)[0]


def embed_folder(
    images: str | os.PathLike,
    out: str | os.PathLike,
    encoder: FaceEncoder,
    *,
    align: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    num_workers: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    restart: bool = False,
    skip_bad_images: bool = False,
) -> EmbeddingIndex:
    """Embed every image below ``images`` into ``out`` (``X.safetensors`` + ``X.json``), resumably.

    Images are processed in chunks of ``chunk_size``; each finished chunk is saved in ``X.safetensors.parts/``
    with the names of its images, so a rerun with the same settings continues where an interrupted one stopped,
    keeping every chunk whose images are unchanged (also when an image was removed or added since). ``overwrite``
    replaces an existing finished index; ``restart`` discards an interrupted run made with other settings.
    ``skip_bad_images`` leaves out images that cannot be read and lists them in the index (``skipped_images``).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    tensor_path, _ = check_embed_output(out, overwrite=overwrite)
    root, files = list_face_images(images)
    info = _index_info(root, encoder, align)
    signature = {
        "format": INDEX_FORMAT,
        "images_root": str(root),
        "chunk_size": int(chunk_size),
        "embedding": {k: v for k, v in info.items() if k != "petal_peft_version"},
    }
    store = ChunkStore(tensor_path, signature, restart=restart)
    chunks = [files[k * chunk_size : (k + 1) * chunk_size] for k in range(math.ceil(len(files) / chunk_size))]
    keys = [hashlib.sha256("\n".join(chunk).encode("utf-8")).hexdigest() for chunk in chunks]
    done = [store.done(k, keys[k], allow_skipped=skip_bad_images) for k in range(len(chunks))]
    done_images = sum(len(chunk) for chunk, finished in zip(chunks, done) if finished)
    transform = _transform(encoder, align)
    with tqdm(
        total=len(files),
        initial=done_images,
        desc=f"embedding ({encoder.encoder})",
        unit="img",
        disable=not progress,
    ) as bar:
        for k, chunk in enumerate(chunks):
            if done[k]:
                continue
            tensors, skipped = _embed_files(root, chunk, encoder, transform, num_workers, bar, skip_bad_images)
            store.write(k, tensors, keys[k], skipped)
    tensors, skipped = store.gather(len(chunks))
    index = _build_index(files, tensors, info, skipped)
    index.info["created_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    index.save(tensor_path)
    store.remove()
    return index
