"""Shared fixtures: the real face-data bundle, small deterministic helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("FACEAUDIT_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FACEAUDIT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real face-data bundle (LFW, UTKFace, FG-NET, MobileFaceNet); skip when absent."""
    if not (SHARED_DATA / "models" / "mobilefacenet.onnx").is_file():
        pytest.skip(
            f"real face data not found at {SHARED_DATA} "
            "(set FACEAUDIT_SHARED_DATA to the bundle's folder to run this test)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def mobilefacenet(shared_data: Path) -> Path:
    """Path to the real MobileFaceNet ONNX model in the bundle."""
    return shared_data / "models" / "mobilefacenet.onnx"
