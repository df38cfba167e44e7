"""Using an adapted face model on folders of images: embed them, search a gallery, verify pairs.

* :func:`embed_folder` embeds every image below a folder (flip-fused, L2-normalised; the gated adapter with the
  quality of each image, a proxy encoder or the base) into an :class:`EmbeddingIndex` (safetensors + JSON),
  resuming an interrupted run;
* :func:`search` ranks gallery identities for each probe;
* :func:`threshold_from_report` takes the verification threshold measured by ``petal-peft eval``.
"""

from .align import load_aligner
from .embed import embed_folder, embed_images, embed_paths, list_face_images
from .encoders import ENCODERS, FaceEncoder, QualityRecorder, build_face_encoder
from .index import ChunkStore, EmbeddingIndex, identity_of, index_paths
from .search import Match, ProbeResult, SearchResult, search
from .verify import ReportThreshold, check_threshold_applies, pair_distances, read_pairs, threshold_from_report

__all__ = [
    "ENCODERS",
    "ChunkStore",
    "EmbeddingIndex",
    "FaceEncoder",
    "Match",
    "ProbeResult",
    "QualityRecorder",
    "ReportThreshold",
    "SearchResult",
    "build_face_encoder",
    "check_threshold_applies",
    "embed_folder",
    "embed_images",
    "embed_paths",
    "identity_of",
    "index_paths",
    "list_face_images",
    "load_aligner",
    "pair_distances",
    "read_pairs",
    "search",
    "threshold_from_report",
]
