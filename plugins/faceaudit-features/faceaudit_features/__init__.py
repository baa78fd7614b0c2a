"""Precomputed-features backend for faceaudit."""
