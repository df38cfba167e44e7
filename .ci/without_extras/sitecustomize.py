"""Hide the optional extras from Python, so CI can run the tests as a user who installed only ``.[dev]``.

Put this folder first on PYTHONPATH: importing a hidden module raises ModuleNotFoundError and
``importlib.util.find_spec`` answers None for it, as when it is not installed.
"""

import importlib.util
import sys

HIDDEN = {
    "onnx", "onnxscript", "onnxruntime",  # the onnx extra
    "dlib", "face_recognition_models",  # the align extra
    "brisque", "cv2", "libsvm", "skimage",  # the quality-ref extra
    "mkdocs", "mkdocstrings", "material",  # the docs extra
}  # fmt: skip


def _hidden(name: str) -> bool:
    return name.split(".", 1)[0] in HIDDEN


class _HideExtras:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if _hidden(name):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by .ci/without_extras)", name=name)
        return None


_find_spec = importlib.util.find_spec


def find_spec(name, package=None):
    if _hidden(name if not name.startswith(".") else ""):
        return None
    return _find_spec(name, package)


importlib.util.find_spec = find_spec
sys.meta_path.insert(0, _HideExtras())
