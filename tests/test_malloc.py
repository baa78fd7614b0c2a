"""glibc malloc tuning for CPU training: applied once, skipped when the user opts out or set glibc's own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = "from faceaudit._malloc import keep_freed_memory as k; print(k(), k())"


def _run(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "FACEAUDIT_MALLOC"))}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is a glibc (Linux) function")
def test_thresholds_are_raised_once_per_process() -> None:
    assert _run({}) == "True True"


@pytest.mark.parametrize(
    "env",
    [{"FACEAUDIT_MALLOC_TUNING": "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"}, {"MALLOC_MMAP_THRESHOLD_": "131072"}],
)
def test_user_settings_win(env: dict[str, str]) -> None:
    assert _run(env) == "False False"
