"""Which weights made an embedding index or an evaluation report, so that search and verify refuse to mix models.

Names are not enough (two folders called ``base`` hold different models; one model can be copied anywhere), so
an index (``petal-peft embed``) and a report (``petal-peft eval``) record ``weights``: a fingerprint of the base
model's weights (every tensor's name, shape and an evenly spaced sample of its values, as loaded in float32, so
the ``--dtype`` of a run does not change it) and one of the adapter (every value of its saved tensors; for
exported proxy encoders, the fingerprint of the adapter they were merged from, which their export recorded).
``search`` compares a gallery with its probes, ``verify`` the embeddings with the report whose threshold it
applies; a difference is refused in one line. Indexes and reports written before fingerprints were recorded
cannot be checked: that is said in a warning, and the work goes on as before.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

__all__ = [
    "WeightsMismatchError",
    "adapter_file_fingerprint",
    "base_model_fingerprint",
    "check_same_weights",
    "weights_record",
]

logger = logging.getLogger(__name__)

#: how the fingerprints are made (recorded next to them)
FINGERPRINT_METHOD = (
    "sha256 over each tensor's name, shape and values (base: 64 evenly spaced values per tensor, as float32; "
    "adapter: all values of its saved tensors)"
)


class WeightsMismatchError(ValueError):
    """Embeddings (or a threshold) made with other model weights than the ones they are compared with."""


def base_model_fingerprint(model: nn.Module) -> str:
    """Fingerprint of a base model's weights; load it in float32 (then cast) so every ``--dtype`` agrees."""
    from petal_peft.tuner.fingerprint import tensor_fingerprint

    return tensor_fingerprint(model.state_dict().items())


def adapter_file_fingerprint(adapter: str | os.PathLike) -> str | None:
    """Fingerprint of the tensors an adapter folder holds (as ``adapter_fingerprint`` of the loaded adapter)."""
    from safetensors.torch import load_file

    from petal_peft.tuner.fingerprint import tensor_fingerprint

    path = Path(adapter) / "adapter_model.safetensors"
    if not path.is_file():
        return None
    return tensor_fingerprint(load_file(str(path)).items(), samples=None)


def proxy_adapter_fingerprint(proxy_encoders: str | os.PathLike) -> str | None:
    """The fingerprint of the adapter that exported proxy encoders were merged from (their export record)."""
    from petal_peft.tuner.proxy import read_proxy_export_record

    record = read_proxy_export_record(Path(proxy_encoders)) or {}
    return record.get("adapter_fingerprint")


def weights_record(base_model: str | None, adapter: str | None) -> dict[str, Any]:
    """The ``weights`` entry of an index or report."""
    return {"base_model": base_model, "adapter": adapter, "method": FINGERPRINT_METHOD}


def _short(value: str | None) -> str:
    return "none" if value is None else value[:12]


def check_same_weights(
    first: Mapping[str, Any] | None,
    second: Mapping[str, Any] | None,
    first_name: str,
    second_name: str,
    *,
    compare_adapter: bool = True,
) -> None:
    """Refuse two ``weights`` records of other base models (or, with ``compare_adapter``, other adapters).

    Args:
        first: the ``weights`` record of one side (None when it was written before fingerprints existed).
        second: the other side's.
        first_name: how the message names the first side (e.g. ``the gallery index g.json``).
        second_name: how it names the second.
        compare_adapter: also compare the adapters (not for a report's ``plain`` mode, made without adapter).

    Raises:
        WeightsMismatchError: the base models differ, or the adapters do.
    """
    missing = [name for name, record in ((first_name, first), (second_name, second)) if not record]
    if missing:
        logger.warning(
            "cannot check that %s and %s come from the same model weights: %s was written by a petal-peft that "
            "did not record weight fingerprints; write it again (petal-peft embed / eval) to have this checked",
            first_name,
            second_name,
            " and ".join(missing),
        )
        return
    assert first is not None and second is not None
    if first.get("base_model") and second.get("base_model") and first["base_model"] != second["base_model"]:
        raise WeightsMismatchError(
            f"{first_name} and {second_name} were made with different base models (weight fingerprints "
            f"{_short(first['base_model'])} vs {_short(second['base_model'])}): their embeddings cannot be "
            "compared; embed both with the same --model."
        )
    if compare_adapter and first.get("adapter") != second.get("adapter"):
        raise WeightsMismatchError(
            f"{first_name} and {second_name} were made with different adapters (fingerprints "
            f"{_short(first.get('adapter'))} vs {_short(second.get('adapter'))}; none = no adapter): their "
            "embeddings cannot be compared; use the same --adapter (or proxy encoders exported from it) for both."
        )
