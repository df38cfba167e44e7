"""Reading insightface ``.bin`` verification sets without executing their pickle.

Those files are Python pickles of ``(list_of_encoded_images, list_of_is_same)``. ``pickle.load`` on a
downloaded file can run arbitrary code, so this unpickler resolves no global except the two that plain bytes
need under pickle protocol 2 (``_codecs.encode`` for bytes, ``bytearray``), each behind a guard that only
accepts the shapes those pickles produce, and then checks the loaded structure.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from typing import Any


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """The pickle asked for something other than plain containers and bytes."""


def _latin1_encode(obj: Any, encoding: str = "latin1") -> bytes:
    # Python 3 writes bytes under protocol <= 2 as _codecs.encode(str, "latin1").
    if not isinstance(obj, str) or encoding.lower().replace("-", "") != "latin1":
        raise UnsafePickleError("refused a _codecs.encode call other than encode(<str>, 'latin1').")
    return obj.encode("latin1")


def _safe_bytearray(*args: Any) -> bytearray:
    if not args:
        return bytearray()
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytearray(args[0])
    if len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], str):
        return bytearray(_latin1_encode(args[0], args[1]))
    raise UnsafePickleError("refused a bytearray(...) call with unexpected arguments.")


_ALLOWED_GLOBALS = {
    ("_codecs", "encode"): _latin1_encode,
    ("builtins", "bytearray"): _safe_bytearray,
    ("__builtin__", "bytearray"): _safe_bytearray,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only lists, tuples, dicts, str, bytes, numbers, booleans and None."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to load the global {module}.{name}: an insightface .bin holds only lists of bytes "
                "and booleans, so this file is either not such a file or crafted to run code."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused a persistent id: not an insightface .bin file.")


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (python 2 strings come back as bytes)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


@dataclass
class VerificationBin:
    """The content of an insightface ``.bin``: encoded images in pair order and one label per pair."""

    images: list[bytes]
    is_same: list[bool]

    @property
    def num_pairs(self) -> int:
        return len(self.is_same)


def load_verification_bin(path: str | os.PathLike) -> VerificationBin:
    """Load an insightface ``.bin`` safely and check it is ``(images, is_same)`` with 2 images per pair."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"verification .bin file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        obj = restricted_loads(data)
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: {err}") from None
    except Exception as err:  # truncated or not a pickle at all
        raise ValueError(f"{path} is not a readable insightface .bin pickle ({type(err).__name__}: {err}).") from None
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise ValueError(
            f"{path}: expected a pickled (images, is_same) pair, got {type(obj).__name__}"
            + (f" of length {len(obj)}" if isinstance(obj, (tuple, list)) else "")
            + "."
        )
    images, is_same = obj
    if not isinstance(images, (list, tuple)) or not all(isinstance(b, (bytes, bytearray)) for b in images):
        raise ValueError(f"{path}: the first element must be a list of encoded images (bytes).")
    if not isinstance(is_same, (list, tuple)):
        raise ValueError(f"{path}: the second element must be a list of booleans, got {type(is_same).__name__}.")
    labels: list[bool] = []
    for i, v in enumerate(is_same):
        if isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)):
            labels.append(bool(v))
        else:
            raise ValueError(f"{path}: is_same[{i}] = {v!r} is not a boolean.")
    if len(images) != 2 * len(labels):
        raise ValueError(
            f"{path}: mismatched pair lists: {len(images)} images for {len(labels)} labels "
            f"(expected {2 * len(labels)} images, two per pair)."
        )
    if not labels:
        raise ValueError(f"{path}: contains no pairs.")
    return VerificationBin(images=[bytes(b) for b in images], is_same=labels)
