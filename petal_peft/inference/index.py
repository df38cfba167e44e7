"""The embedding index: a safetensors file of tensors plus a JSON file that says what they are.

``gallery.safetensors`` holds, row ``i`` for image ``i``: ``embeddings`` [N, D] (flip-fused, L2-normalised
float32), ``norms`` [N] (norm of the fused raw feature), ``identity`` [N] (int64 index into the JSON's
``identity_names``), and when a quality estimator ran ``quality_score`` / ``quality_score_flipped`` (raw estimator
scores of the image and of its mirror) and ``gate`` / ``gate_flipped`` (q in [0, 1] the gate gives them).
``gallery.json`` holds the file paths (relative to ``images_root``), their identities, how they were embedded
(model, adapter, encoder, flip test, preprocessing, quality settings) and the SHA-256 of the tensor file, so a
JSON and a tensor file that do not belong together are refused.

A long run writes chunks into ``gallery.safetensors.parts/`` (each chunk file written atomically, naming the
hash of its images' names) next to a ``run.json`` describing the run; a rerun with the same settings keeps
every chunk whose images are the same and embeds the rest. The final files are written atomically and the
chunk folder is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from petal_peft.files import write_file_atomic, write_json_atomic

INDEX_FORMAT = "petal-peft-embeddings"
INDEX_VERSION = 1
OPTIONAL_TENSORS = ("quality_score", "quality_score_flipped", "gate", "gate_flipped")


def index_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """(tensor file, JSON file) for an ``--out`` value: ``x`` or ``x.safetensors`` -> x.safetensors, x.json."""
    out = Path(out)
    if out.suffix == ".json":
        raise ValueError(f"--out names the tensor file (e.g. {out.with_suffix('.safetensors')}), not the JSON: {out}")
    tensors = out if out.suffix == ".safetensors" else out.with_name(out.name + ".safetensors")
    return tensors, tensors.with_suffix(".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class EmbeddingIndex:
    """Embeddings of a folder of face images, with what is needed to search and verify against them."""

    embeddings: torch.Tensor
    files: list[str]
    identities: list[str]
    norms: torch.Tensor
    quality: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = int(self.embeddings.shape[0]) if self.embeddings.dim() == 2 else -1
        if n < 0:
            raise ValueError(f"embeddings must be [N, D], got {tuple(self.embeddings.shape)}.")
        for name, value in (("files", self.files), ("identities", self.identities), ("norms", self.norms)):
            if len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries for {n} embeddings.")
        for name, value in self.quality.items():
            if name not in OPTIONAL_TENSORS or tuple(value.shape) != (n,):
                raise ValueError(f"quality tensor {name!r} must be one of {OPTIONAL_TENSORS} with shape [{n}].")

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def identity_names(self) -> list[str]:
        return sorted(set(self.identities))

    def identity_ids(self) -> torch.Tensor:
        """Per row, the index of its identity in :attr:`identity_names`."""
        lookup = {name: i for i, name in enumerate(self.identity_names)}
        return torch.tensor([lookup[name] for name in self.identities], dtype=torch.long)

    @property
    def images_root(self) -> str | None:
        return self.info.get("images_root")

    def row_of(self, name: str) -> int:
        """The row of an image given by its path relative to :attr:`images_root` (or an absolute path)."""
        if getattr(self, "_rows", None) is None:
            self._rows = {f: i for i, f in enumerate(self.files)}
        if name in self._rows:
            return self._rows[name]
        root = self.images_root
        if root and os.path.isabs(name) and os.path.relpath(name, root) in self._rows:
            return self._rows[os.path.relpath(name, root)]
        raise KeyError(f"{name!r} is not in the embedding index {self.info.get('path')} (paths relative to {root}).")

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {
            "embeddings": self.embeddings.float().contiguous(),
            "norms": self.norms.float().contiguous(),
            "identity": self.identity_ids(),
        }
        out.update({k: v.float().contiguous() for k, v in self.quality.items()})
        return out

    def save(self, out: str | os.PathLike) -> tuple[Path, Path]:
        """Write the tensor file, then the JSON naming its checksum (each atomically); return both paths."""
        tensor_path, json_path = index_paths(out)
        write_file_atomic(tensor_path, lambda tmp: save_file(self.tensors(), tmp, metadata={"format": INDEX_FORMAT}))
        document = {
            "format": INDEX_FORMAT,
            "format_version": INDEX_VERSION,
            **{k: v for k, v in self.info.items() if k not in ("format", "format_version", "path")},
            "tensor_file": tensor_path.name,
            "tensor_sha256": _sha256(tensor_path),
            "count": len(self),
            "dim": self.dim,
            "tensors": sorted(self.tensors()),
            "identity_names": self.identity_names,
            "files": list(self.files),
            "identities": list(self.identities),
        }
        write_json_atomic(json_path, document)
        return tensor_path, json_path

    @classmethod
    def load(cls, path: str | os.PathLike) -> EmbeddingIndex:
        """Load from the tensor file or the JSON path (either names the pair)."""
        path = Path(path)
        tensor_path, json_path = index_paths(path.with_suffix(".safetensors") if path.suffix == ".json" else path)
        for p in (tensor_path, json_path):
            if not p.is_file():
                raise FileNotFoundError(
                    f"embedding index file not found: {p} (petal-peft embed writes X.safetensors and X.json)."
                )
        try:
            document = json.loads(json_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{json_path} is not valid JSON: {err}") from None
        if document.get("format") != INDEX_FORMAT:
            raise ValueError(f"{json_path} is not a petal-peft embedding index (format {document.get('format')!r}).")
        if int(document.get("format_version", 0)) > INDEX_VERSION:
            raise ValueError(f"{json_path} was written by a newer petal-peft (format {document['format_version']}).")
        if document.get("tensor_sha256") != _sha256(tensor_path):
            raise ValueError(
                f"{tensor_path} does not belong to {json_path} (checksum differs): one of them was replaced or "
                "the write was interrupted; run petal-peft embed again."
            )
        tensors = load_file(str(tensor_path))
        names = document["identity_names"]
        identities = document["identities"]
        if [names[i] for i in tensors["identity"].tolist()] != identities:
            raise ValueError(f"{json_path}: identities disagree with the identity tensor of {tensor_path}.")
        info = {
            k: v
            for k, v in document.items()
            if k not in ("files", "identities", "identity_names", "tensors", "tensor_sha256", "tensor_file")
        }
        info["path"] = str(tensor_path)
        return cls(
            embeddings=tensors["embeddings"],
            files=list(document["files"]),
            identities=list(identities),
            norms=tensors["norms"],
            quality={k: tensors[k] for k in OPTIONAL_TENSORS if k in tensors},
            info=info,
        )


# ----------------------------------------------------------------------------------------------------
# Chunked, resumable writing
# ----------------------------------------------------------------------------------------------------


class ChunkStore:
    """Chunks of a run in ``<out>.parts/``: ``run.json`` (what the run is) and ``chunk-000000.safetensors``, ...

    A chunk file exists only once complete (written atomically), so after an interruption the completed chunks
    are exactly the files present. ``signature`` must be JSON-able; a rerun with another signature (other model,
    settings or image list) is refused unless ``restart``.
    """

    def __init__(self, out: str | os.PathLike, signature: Mapping[str, Any], restart: bool = False) -> None:
        tensor_path, _ = index_paths(out)
        self.folder = tensor_path.with_name(tensor_path.name + ".parts")
        self.signature = json.loads(json.dumps(signature))
        run_file = self.folder / "run.json"
        if self.folder.exists() and restart:
            shutil.rmtree(self.folder)
        if run_file.is_file():
            previous = json.loads(run_file.read_text(encoding="utf-8"))
            if previous != self.signature:
                changed = sorted(
                    k for k in set(previous) | set(self.signature) if previous.get(k) != self.signature.get(k)
                )
                raise ValueError(
                    f"{self.folder} holds an interrupted run with other settings (differs in {changed}); pass "
                    "--restart to discard it, or rerun with the same settings to resume."
                )
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(run_file, self.signature)

    def chunk_path(self, k: int) -> Path:
        return self.folder / f"chunk-{k:06d}.safetensors"

    def _metadata(self, k: int) -> dict[str, str] | None:
        try:
            with safe_open(str(self.chunk_path(k)), framework="pt") as handle:
                return handle.metadata() or {}
        except (OSError, SafetensorError):
            return None

    def done(self, k: int, key: str, allow_skipped: bool = False) -> bool:
        """Chunk ``k`` is finished for the images ``key`` names (and skipped none unless ``allow_skipped``)."""
        metadata = self._metadata(k)
        if metadata is None or metadata.get("files_sha256") != key:
            return False
        return allow_skipped or not json.loads(metadata.get("skipped", "{}"))

    def write(self, k: int, tensors: Mapping[str, torch.Tensor], key: str, skipped: Mapping[str, str]) -> None:
        """Save chunk ``k``: the rows of the images read, the key of its image names, the images skipped."""
        contiguous = {n: t.contiguous() for n, t in tensors.items()}
        metadata = {"files_sha256": key, "skipped": json.dumps(dict(skipped))}
        write_file_atomic(self.chunk_path(k), lambda tmp: save_file(contiguous, tmp, metadata=metadata))

    def read(self, k: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        metadata = self._metadata(k) or {}
        return load_file(str(self.chunk_path(k))), json.loads(metadata.get("skipped", "{}"))

    def gather(self, num_chunks: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """(the rows of every chunk, concatenated; every skipped image with its problem)."""
        parts, skipped = [], {}
        for k in range(num_chunks):
            tensors, problems = self.read(k)
            skipped.update(problems)
            if tensors:
                parts.append(tensors)
        if not parts:
            return {}, skipped
        return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}, skipped

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def identity_of(relative_path: str) -> str:
    """The identity of an image from its path below the images root: its top folder (``name/x.jpg`` and
    ``name/session/x.jpg`` -> ``name``); an image directly in the root is its own identity (the file stem)."""
    parts = Path(relative_path).parts
    return parts[0] if len(parts) > 1 else Path(relative_path).stem


def identities_of(files: Sequence[str]) -> list[str]:
    return [identity_of(f) for f in files]
