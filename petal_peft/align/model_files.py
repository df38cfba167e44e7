"""Where dlib's model files are: the installed ``face_recognition_models`` package (the ``align`` extra)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from petal_peft.extras import MissingExtraError, install_hint

__all__ = ["dlib_model_file"]


def dlib_model_file(name: str) -> Path:
    """A model file of the installed ``face_recognition_models`` package, found without importing it.

    (Importing it needs ``pkg_resources``, which recent setuptools no longer ship; only its files are needed.)
    Its models are dlib's (Davis King), in the public domain / CC0 1.0 Universal as the package states.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            "dlib's model files come from the `face_recognition_models` package, which is not installed "
            f"({install_hint('align')})."
        )
    for root in spec.submodule_search_locations:
        path = Path(root) / "models" / name
        if path.is_file():
            return path
    raise FileNotFoundError(f"face_recognition_models is installed but has no models/{name}.")
