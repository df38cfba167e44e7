"""Face alignment (the ``align`` extra): detect the face, place dlib's 5
landmarks, and warp the image so that they land on a template (the ArcFace 112x112 crop by default).

The geometry (:mod:`.geometry`) needs no dlib; detection and landmarks (:mod:`.landmarks`) import dlib when first
used, so ``import petal_peft.align`` works without it.
"""

from petal_peft.align.aligner import FALLBACKS, AlignedFace, FaceAligner, image_aligner, warp_to_template
from petal_peft.align.folder import REPORT_NAME, AlignReport, align_folder
from petal_peft.align.geometry import (
    ARCFACE_TEMPLATE_112,
    DLIB5_IN_ARCFACE_112,
    DLIB5_MEAN_FACE,
    TEMPLATES,
    landmark_template,
    similarity_transform,
    template_to_template,
    warp_affine,
)
from petal_peft.align.landmarks import FaceLandmarker, Landmarks
from petal_peft.align.model_files import dlib_model_file

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "AlignReport",
    "AlignedFace",
    "DLIB5_IN_ARCFACE_112",
    "DLIB5_MEAN_FACE",
    "FALLBACKS",
    "FaceAligner",
    "FaceLandmarker",
    "Landmarks",
    "REPORT_NAME",
    "TEMPLATES",
    "align_folder",
    "dlib_model_file",
    "image_aligner",
    "landmark_template",
    "similarity_transform",
    "template_to_template",
    "warp_affine",
    "warp_to_template",
]
