"""A folder of real faces, ``root/<identity>/<image>`` (or the Olivetti faces), split by identity at random.

For small identity-labelled sets without an official protocol: identities with >= 3 images are split
(seed 0) into validation 15 % / adaptation 45 % / evaluation 40 %, a quarter of the evaluation identities
serving as gallery distractors. The LFW-based protocol is the ``real_faces`` source.
"""

from __future__ import annotations

from ..data import DATA_SOURCES, BenchmarkData
from ..settings import BenchmarkSettings
from .synthetic import assemble

__all__ = ["identity_folder_source"]


@DATA_SOURCES.register("identity_folder")
def identity_folder_source(s: BenchmarkSettings, image_size: int) -> BenchmarkData:
    from ...data.real_faces import group_by_identity, load_folder_faces, load_real_faces, split_identities

    if not s.faces:
        raise ValueError("the identity_folder source needs `faces`: a root/<identity>/<image> folder or 'olivetti'.")
    if s.faces == "olivetti":
        samples, what = load_real_faces("olivetti"), "Olivetti/AT&T faces (real)"
    else:
        samples, what = load_folder_faces(s.faces), f"real faces from {s.faces}"
    groups = {k: list(v) for k, v in group_by_identity(samples).items()}
    usable = [k for k, v in groups.items() if len(v) >= 3]
    if len(usable) < 8:
        raise ValueError(f"{what}: need >= 8 identities with >= 3 images each, found {len(usable)}.")
    # split_identities' three groups, reused as (validation, adapt, eval)
    split = split_identities(usable, seed=0, fractions=(0.15, 0.45, 0.4))
    eval_all = list(split.eval)
    n_distr = max(1, round(0.25 * len(eval_all)))
    names = {
        "adapt": list(split.adapt),
        "val": list(split.pretrain),
        "eval": eval_all[n_distr:],
        "distractors": eval_all[:n_distr],
    }
    description = f"{what}, {len(usable)} identities"
    return assemble(
        s, image_size, groups, names, None, description=description, real_faces=True, tag="real faces", terms=""
    )
