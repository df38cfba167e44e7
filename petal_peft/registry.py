"""Name -> factory registries, shared by the tuner core and the face parts.

The tuner needs to build a quality gate from the names stored in an adapter config, but must not import
the face-recognition code; the quality package registers its estimators and gates here, and the tuner looks
them up by name. Registering is separate from building (timm style).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Registry:
    """A mapping from names to factories (classes or functions), filled with the ``register`` decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, factory: Callable[..., Any] | None = None, *, overwrite: bool = False):
        """Register ``factory`` under ``name``; usable as ``@REG.register("name")`` or called directly."""

        def _add(obj: Callable[..., Any]) -> Callable[..., Any]:
            if not overwrite and name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"A {self.kind} named {name!r} is already registered; pass overwrite=True.")
            self._entries[name] = obj
            return obj

        return _add(factory) if factory is not None else _add

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"Unknown {self.kind} {name!r}. Registered: {sorted(self._entries)}. "
                "Did you `import petal_peft` (which registers the built-in ones)?"
            ) from None

    def build(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


#: pixel_values [B, C, H, W] -> raw score [B]. Factories take ``image_mean``, ``image_std`` and their own kwargs,
#: and the built module exposes ``higher_is_better: bool``.
QUALITY_ESTIMATORS = Registry("quality estimator")

#: raw score [B] -> quality q in [0, 1] (1 = high quality). Factories take ``threshold``, ``temperature`` and
#: ``higher_is_better``.
QUALITY_GATES = Registry("quality gate")

#: model_type -> default ``target_modules`` (a full-match regex, or a list of module-name suffixes) for
#: architectures defined outside the tuner core, e.g. petal-peft's own face backbones. The tuner consults it
#: before its built-in defaults, so ``QualityGatedLoraConfig()`` needs no ``target_modules`` for them.
DEFAULT_TARGET_MODULES = Registry("default target modules")

#: model_type -> {group name: full-match regex over module names}: named parts of an architecture (e.g. ``stem``,
#: ``attention``, ``mlp``) that ``target_modules`` can combine with ``+`` (``"stem+attention"``); see
#: :func:`petal_peft.tuner.targets.resolve_target_modules`.
TARGET_MODULE_GROUPS = Registry("target module groups")
