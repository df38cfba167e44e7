"""Old import paths of moved modules, kept working with a DeprecationWarning.

No file stays at an old path (so that git follows the moves): an import finder answers for the old names and
hands out the module that now holds the code (the very same module object).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

#: old module -> the module that holds its code now
MOVED_MODULES = {
    "petal_peft.zoo.real_faces": "petal_peft.data.real_faces",
    "petal_peft.zoo.synthetic_identities": "petal_peft.data.synthetic_identities",
    "petal_peft.zoo.dlib_serialization": "petal_peft.convert.dlib_serialization",
    "petal_peft.zoo.dlib_resnet": "petal_peft.convert.dlib_resnet",  # it also holds DlibFaceResNet (models/)
    "petal_peft.zoo.pretrained_base": "petal_peft.recipes.synthetic_base",
    "petal_peft.zoo.real_base": "petal_peft.recipes.real_base",
    "petal_peft.evaluation.extractor": "petal_peft.embedding.extractor",
    "petal_peft.evaluation.images": "petal_peft.embedding.images",
    "petal_peft.export.loading": "petal_peft.embedding.loading",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old module names; loading one warns and returns the new module."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: D102
        if fullname in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec) -> ModuleType:  # noqa: D102
        new = MOVED_MODULES[spec.name]
        warnings.warn(f"{spec.name} is deprecated: import from {new} instead.", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        self._spec_of = getattr(module, "__spec__", None)
        return module

    def exec_module(self, module: ModuleType) -> None:  # noqa: D102
        module.__spec__ = self._spec_of  # the import machinery set the old name's spec on the shared module


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (each package that lost a module calls it on import)."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
