"""A real face-recognition transformer, distilled offline from dlib's ResNet by function matching.

The base model petal-peft adapts must recognise real faces, and the face photos at hand (LFW folds and a few
Glint360K celebrities: about 5,700 images of the base identity group) are far too few to train a face
recogniser from labels. So a small ViT learns to reproduce dlib's face descriptor (a CC0 ResNet, run in torch by
:mod:`petal_peft.models.dlib_resnet`) by *function matching* (Beyer et al., "Knowledge distillation: a good teacher
is patient and consistent", CVPR 2022): at every step teacher and student see the same freshly augmented view
(random similarity warp, mirror, colour jitter, mixup of two faces), so the student learns the teacher's function
around the images, not just its values on them. Labels are not used.

Geometry: every photo is aligned once (:mod:`petal_peft.align`, dlib's detector and 5 landmarks) to the ArcFace
112x112 crop with ``canvas_margin`` pixels of context on each side. The student sees the ArcFace crop (resized to
its input size); the teacher sees dlib's own 150x150 chip (padding 0.25), cut from the same augmented canvas by a
fixed similarity, so each network gets its native framing of the same face.

:func:`build_real_face_base` runs it all and writes a folder ``AutoModel`` / ``AutoImageProcessor`` load (a
``FaceConvViTModel`` by default, ``architecture="conv_vit"``; a plain ``ViTModel`` with ``architecture="vit"``;
the 128-d embedding is ``pooler_output``), with a model card, the base identities and the measured verification
accuracy on held-out LFW pairs next to the teacher's.

Modules: ``settings`` (:class:`RealBaseSettings`), ``views`` (aligned canvases, augmented views), ``student``
(the network, the loss, embedding and verification helpers), ``loop`` (:func:`distill`), ``card`` (the model
card) and ``build`` (the whole build and the saved folder).
"""

from .build import IDENTITIES_NAME, RECORD_NAME, balanced_order, build_real_face_base, save_real_face_base
from .card import NOTICE, model_card
from .loop import distill
from .settings import RealBaseSettings
from .student import (
    DLIB_IMAGE_MEAN,
    DLIB_IMAGE_STD,
    build_student,
    distillation_loss,
    flip_fused_embeddings,
    normalizer,
    student_embed_fn,
    student_normalization,
    teacher_descriptor_mean,
    verification_accuracy,
)
from .views import FaceCanvases, ViewSampler

__all__ = [
    "DLIB_IMAGE_MEAN",
    "DLIB_IMAGE_STD",
    "IDENTITIES_NAME",
    "NOTICE",
    "RECORD_NAME",
    "FaceCanvases",
    "RealBaseSettings",
    "ViewSampler",
    "balanced_order",
    "build_real_face_base",
    "build_student",
    "distill",
    "distillation_loss",
    "flip_fused_embeddings",
    "model_card",
    "normalizer",
    "save_real_face_base",
    "student_embed_fn",
    "student_normalization",
    "teacher_descriptor_mean",
    "verification_accuracy",
]
