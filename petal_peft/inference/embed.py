"""Embedding every face image below a folder, in chunks that survive an interruption."""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from petal_peft.embedding.images import ImagePathDataset, list_images

from .align import AlignedTransform, load_aligner
from .encoders import FaceEncoder
from .index import INDEX_FORMAT, ChunkStore, EmbeddingIndex, identities_of, index_paths

DEFAULT_CHUNK_SIZE = 1024


def list_face_images(images: str | os.PathLike) -> tuple[Path, list[str]]:
    """(root, image paths relative to it, sorted): every .jpg/.jpeg/.png/.bmp/.webp below ``images``."""
    root = Path(images)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    files = [os.path.relpath(p, root) for p in list_images(root)]
    if not files:
        raise ValueError(f"{root} contains no images (.jpg, .jpeg, .png, .bmp, .webp) in it or below it.")
    return root.resolve(), files


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
) -> dict[str, torch.Tensor]:
    dataset = ImagePathDataset([str(root / f) for f in files], transform)  # type: ignore[arg-type]
    loader = DataLoader(dataset, batch_size=encoder.batch_size, shuffle=False, num_workers=num_workers)
    parts = []
    for batch in loader:
        parts.append(encoder.embed_batch(batch))
        bar.update(int(batch.shape[0]))
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


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


def _build_index(files: list[str], tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> EmbeddingIndex:
    quality = {k: v for k, v in tensors.items() if k not in ("embeddings", "norms")}
    return EmbeddingIndex(tensors["embeddings"], files, identities_of(files), tensors["norms"], quality, info)


def embed_images(
    images: str | os.PathLike,
    encoder: FaceEncoder,
    *,
    align: bool = False,
    num_workers: int = 0,
    progress: bool = True,
) -> EmbeddingIndex:
    """Embed every image below ``images`` in memory (no files written): what ``search`` does with probe folders."""
    root, files = list_face_images(images)
    transform = _transform(encoder, align)
    with tqdm(total=len(files), desc=f"embedding ({encoder.encoder})", unit="img", disable=not progress) as bar:
        tensors = _embed_files(root, files, encoder, transform, num_workers, bar)
    return _build_index(files, tensors, _index_info(root, encoder, align))


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
        return _embed_files(Path("/"), files, encoder, transform, num_workers, bar)


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
) -> EmbeddingIndex:
    """Embed every image below ``images`` into ``out`` (``X.safetensors`` + ``X.json``), resumably.

    Images are processed in chunks of ``chunk_size``; each finished chunk is saved in ``X.safetensors.parts/``,
    so a rerun with the same settings continues where an interrupted one stopped. ``overwrite`` replaces an
    existing finished index; ``restart`` discards an interrupted run made with other settings.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    tensor_path, json_path = index_paths(out)
    root, files = list_face_images(images)
    store_folder = tensor_path.with_name(tensor_path.name + ".parts")
    if (tensor_path.exists() or json_path.exists()) and not overwrite and not store_folder.exists():
        raise FileExistsError(f"{tensor_path} already exists; pass --overwrite to replace it.")
    info = _index_info(root, encoder, align)
    signature = {
        "format": INDEX_FORMAT,
        "images_root": str(root),
        "count": len(files),
        "files_sha256": hashlib.sha256("\n".join(files).encode("utf-8")).hexdigest(),
        "chunk_size": int(chunk_size),
        "embedding": {k: v for k, v in info.items() if k != "petal_peft_version"},
    }
    store = ChunkStore(tensor_path, signature, restart=restart)
    num_chunks = math.ceil(len(files) / chunk_size)
    done = [k for k in range(num_chunks) if store.done(k)]
    done_images = sum(len(files[k * chunk_size : (k + 1) * chunk_size]) for k in done)
    transform = _transform(encoder, align)
    with tqdm(
        total=len(files),
        initial=done_images,
        desc=f"embedding ({encoder.encoder})",
        unit="img",
        disable=not progress,
    ) as bar:
        for k in range(num_chunks):
            if store.done(k):
                continue
            chunk = files[k * chunk_size : (k + 1) * chunk_size]
            store.write(k, _embed_files(root, chunk, encoder, transform, num_workers, bar))
    index = _build_index(files, store.gather(num_chunks), info)
    index.info["created_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    index.save(tensor_path)
    store.remove()
    return index
