"""Face-recognition data: folders, TinyFace, insightface RecordIO and Hugging Face datasets, plus transforms.

Every dataset yields ``{"pixel_values": float [3, S, S], "labels": long scalar}`` (+ ``"quality_level"``
when a degradation is configured) and exposes ``labels`` (list[int]) and ``num_classes``. Bad data raises
:class:`DataValidationError` at construction, naming the file and the problem.
"""

from petal_peft.data.base import IMAGE_EXTENSIONS, FaceDataset, FaceSubset
from petal_peft.data.errors import DataValidationError
from petal_peft.data.factory import build_face_dataset, detect_source_kind
from petal_peft.data.folder import FaceImageFolder, TinyFaceEvalSplit
from petal_peft.data.hf import HFFaceDataset, load_hf_face_dataset
from petal_peft.data.lfw import FaceGroups, LfwPair, lfw_face_groups, read_lfw_pairs
from petal_peft.data.recordio import RecordIODataset, read_index, write_recordio
from petal_peft.data.transforms import (
    DegradationResult,
    FaceTransform,
    LowResolutionDegradation,
    sample_generator,
    sample_seed,
)
from petal_peft.data.validation import check_image_file, find_unusable_images, validate_face_dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataValidationError",
    "DegradationResult",
    "FaceGroups",
    "FaceDataset",
    "FaceImageFolder",
    "FaceSubset",
    "FaceTransform",
    "HFFaceDataset",
    "LfwPair",
    "LowResolutionDegradation",
    "RecordIODataset",
    "TinyFaceEvalSplit",
    "build_face_dataset",
    "check_image_file",
    "detect_source_kind",
    "find_unusable_images",
    "lfw_face_groups",
    "load_hf_face_dataset",
    "read_index",
    "read_lfw_pairs",
    "sample_generator",
    "sample_seed",
    "validate_face_dataset",
    "write_recordio",
]
