"""Ready-made data and models for benchmarks and defaults: real-face loaders and identity splits, procedural
synthetic identities (pretraining data, not faces) and the small pretrained face ViT (built deterministically
on first use, then cached)."""

from petal_peft.zoo.pretrained_base import PretrainSettings, get_pretrained_base, random_init_base
from petal_peft.zoo.real_faces import (
    FaceSample,
    IdentitySplit,
    RealFacesUnavailableError,
    load_real_faces,
    split_identities,
    write_eval_folders,
    write_train_folder,
)
from petal_peft.zoo.synthetic_identities import SyntheticIdentities

__all__ = [
    "FaceSample",
    "IdentitySplit",
    "PretrainSettings",
    "RealFacesUnavailableError",
    "SyntheticIdentities",
    "get_pretrained_base",
    "load_real_faces",
    "random_init_base",
    "split_identities",
    "write_eval_folders",
    "write_train_folder",
]
