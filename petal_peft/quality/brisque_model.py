"""The LIVE BRISQUE regressor (an RBF epsilon-SVR over 36 scaled features), stored as safetensors.

Provenance: converted once from the PyPI package ``brisque`` 0.2.0 (Apache-2.0), files
``brisque/models/svm.txt`` (libsvm model trained on the LIVE IQA database, as in Mittal et al. 2012) and
``brisque/models/normalize.pickle`` (the per-feature min/max of the [-1, 1] feature scaling). The pickle is read
with an unpickler that refuses every global, so only plain dicts, lists and floats can come out of it.
Regenerate with ``python -m petal_peft.quality.brisque_model <svm.txt> <normalize.pickle> <out.safetensors>``.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..files import write_file_atomic

MODEL_FILE = Path(__file__).with_name("brisque_live_svr.safetensors")
NUM_FEATURES = 36


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles builtin containers and numbers only; any class or function reference is refused."""

    def find_class(self, module: str, name: str):  # noqa: D102
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a BRISQUE normalisation file")


def read_plain_pickle(path: str | os.PathLike) -> object:
    """Read a pickle that may contain only dicts, lists, tuples, strings and numbers."""
    with open(path, "rb") as handle:
        return _PlainDataUnpickler(io.BytesIO(handle.read())).load()


@dataclass
class SvrModel:
    support_vectors: torch.Tensor  # [N, 36] float64
    coefficients: torch.Tensor  # [N] float64 (dual coefficients alpha_i - alpha_i*)
    rho: float
    gamma: float
    feature_min: torch.Tensor  # [36] float64
    feature_max: torch.Tensor  # [36] float64


def parse_libsvm_model(path: str | os.PathLike) -> tuple[dict[str, str], torch.Tensor, torch.Tensor]:
    """Header, support vectors [N, D] and coefficients [N] of a libsvm text model (sparse rows, 1-based)."""
    header: dict[str, str] = {}
    rows: list[dict[int, float]] = []
    coefs: list[float] = []
    with open(path, encoding="ascii") as handle:
        lines = iter(handle)
        for line in lines:
            line = line.strip()
            if line == "SV":
                break
            key, _, value = line.partition(" ")
            header[key] = value
        for line in lines:
            parts = line.split()
            if not parts:
                continue
            coefs.append(float(parts[0]))
            rows.append({int(k): float(v) for k, v in (p.split(":") for p in parts[1:])})
    if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf":
        raise ValueError(f"expected an RBF epsilon-SVR libsvm model, got {header}")
    dim = max(max(r) for r in rows if r)
    vectors = torch.zeros(len(rows), dim, dtype=torch.float64)
    for i, row in enumerate(rows):
        for k, v in row.items():
            vectors[i, k - 1] = v  # libsvm omits zero entries
    if len(rows) != int(header["total_sv"]):
        raise ValueError(f"libsvm model says total_sv={header['total_sv']} but has {len(rows)} rows")
    return header, vectors, torch.tensor(coefs, dtype=torch.float64)


def convert(svm_txt: str | os.PathLike, normalize_pickle: str | os.PathLike, out: str | os.PathLike) -> None:
    """Write the libsvm model and its feature scaling as one safetensors file (atomically)."""
    header, vectors, coefs = parse_libsvm_model(svm_txt)
    scaling = read_plain_pickle(normalize_pickle)
    if not isinstance(scaling, dict) or not {"min_", "max_"} <= set(scaling):
        raise ValueError("normalisation file must hold a dict with 'min_' and 'max_' lists")
    tensors = {
        "support_vectors": vectors.contiguous(),
        "coefficients": coefs.contiguous(),
        "feature_min": torch.tensor([float(v) for v in scaling["min_"]], dtype=torch.float64),
        "feature_max": torch.tensor([float(v) for v in scaling["max_"]], dtype=torch.float64),
    }
    if vectors.shape[1] != NUM_FEATURES or tensors["feature_min"].numel() != NUM_FEATURES:
        raise ValueError(f"expected {NUM_FEATURES} BRISQUE features, got {vectors.shape[1]}")
    metadata = {
        "rho": header["rho"],
        "gamma": header["gamma"],
        "source": "PyPI brisque 0.2.0: brisque/models/svm.txt + normalize.pickle (LIVE IQA database SVR)",
        "license": "Apache-2.0",
    }
    write_file_atomic(out, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_svr(path: str | os.PathLike = MODEL_FILE) -> SvrModel:
    """Load the BRISQUE SVR written by :func:`convert` (no pickle involved)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    tensors = load_file(str(path))
    return SvrModel(
        support_vectors=tensors["support_vectors"],
        coefficients=tensors["coefficients"],
        rho=float(metadata["rho"]),
        gamma=float(metadata["gamma"]),
        feature_min=tensors["feature_min"],
        feature_max=tensors["feature_max"],
    )


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m petal_peft.quality.brisque_model SVM_TXT NORMALIZE_PICKLE OUT.safetensors")
    convert(*sys.argv[1:])
