"""Data: manifests (CSV/Parquet), attribute kinds and group bins, yaw from landmarks."""

from faceaudit.data.align import ARCFACE_TEMPLATE_112, align_face, umeyama, warp_affine
from faceaudit.data.attributes import DEFAULT_BINS, Attribute, Binning, infer_kind, is_missing, make_attribute
from faceaudit.data.images import decode_image
from faceaudit.data.manifest import LANDMARK_COLUMNS, Manifest, load_manifest
from faceaudit.data.preprocess import PreprocessSpec
from faceaudit.data.yaw import yaw_from_landmarks

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "PreprocessSpec",
    "align_face",
    "decode_image",
    "umeyama",
    "warp_affine",
    "DEFAULT_BINS",
    "LANDMARK_COLUMNS",
    "Attribute",
    "Binning",
    "Manifest",
    "infer_kind",
    "is_missing",
    "load_manifest",
    "make_attribute",
    "yaw_from_landmarks",
]
