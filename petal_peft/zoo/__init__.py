"""The small face ViT that ships with petal-peft (``weights/``) and its loader, :func:`get_pretrained_base`.

The rest of the old ``zoo`` moved: data loaders to :mod:`petal_peft.data` (``real_faces``,
``synthetic_identities``), dlib's face ResNet to :mod:`petal_peft.models.dlib_resnet` (its file reader to
:mod:`petal_peft.convert`), and the base-building recipes to :mod:`petal_peft.recipes`. The old names still import
from here, with a DeprecationWarning.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from petal_peft import _moved
from petal_peft.recipes.synthetic_base import get_pretrained_base

_moved.install()

__all__ = ["get_pretrained_base"]

#: names this package used to export -> the module they live in now
_MOVED = {
    "FaceSample": "petal_peft.data.real_faces",
    "IdentitySplit": "petal_peft.data.real_faces",
    "RealFacesUnavailableError": "petal_peft.data.real_faces",
    "load_real_faces": "petal_peft.data.real_faces",
    "split_identities": "petal_peft.data.real_faces",
    "write_eval_folders": "petal_peft.data.real_faces",
    "write_train_folder": "petal_peft.data.real_faces",
    "SyntheticIdentities": "petal_peft.data.synthetic_identities",
    "PretrainSettings": "petal_peft.recipes.synthetic_base",
    "random_init_base": "petal_peft.recipes.synthetic_base",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        new = _MOVED[name]
        warnings.warn(
            f"petal_peft.zoo.{name} is deprecated: import it from {new} instead.", DeprecationWarning, stacklevel=2
        )
        return getattr(importlib.import_module(new), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
