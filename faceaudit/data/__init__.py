"""Data: manifests (CSV/Parquet), attribute kinds and group bins, yaw from landmarks."""

from faceaudit.data.attributes import DEFAULT_BINS, Attribute, Binning, infer_kind, make_attribute
from faceaudit.data.manifest import LANDMARK_COLUMNS, Manifest, load_manifest
from faceaudit.data.yaw import yaw_from_landmarks

__all__ = [
    "DEFAULT_BINS",
    "LANDMARK_COLUMNS",
    "Attribute",
    "Binning",
    "Manifest",
    "infer_kind",
    "load_manifest",
    "make_attribute",
    "yaw_from_landmarks",
]
