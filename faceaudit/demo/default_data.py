"""The built-in default data: phantom faces generated on the fly when no manifest is given.

`faceaudit run model.onnx --attrs age,sex,yaw` must work as typed on a fresh
install, so without `--data` the audit runs on phantom faces drawn by the
demo's generator (`faceaudit.demo.phantom`) at the model's input size, into
the run's cache (reused on a rerun). No disparity is injected into this set:
the audit measures the model, not a difficulty planted in the data. Every
report of such a run says, in its header and under `data`, that the faces are
synthetic and what that does and does not tell about real people.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faceaudit.errors import InputError

log = logging.getLogger(__name__)

#: Faces in the default set (and identities: 10 images each), a size sensible for a first look.
DEFAULT_N_FACES = 1200
IMAGES_PER_IDENTITY = 10
#: Bumped when the phantom's drawing changes, so a cached set is regenerated.
PHANTOM_DATA_VERSION = 1
#: The attributes the phantom provides (what `--attrs` may name without `--data`).
PHANTOM_ATTRIBUTES: tuple[str, ...] = ("age", "sex", "skin_tone", "yaw", "roll", "identity")

SYNTHETIC_STATEMENT = (
    "The faces are synthetic: procedurally drawn phantom faces from faceaudit's built-in generator, "
    "whose identity, age, sex, skin tone and yaw are set by the generator (ground truth, not estimates), "
    "with no disparity injected between groups. What it tells: which layers of the model encode these "
    "drawn cues, whether the model separates the phantom's identities, and whether its verification error "
    "rates differ between the phantom's groups; a check that the audit runs and a first look at the "
    "model's sensitivities. What it does not tell: how the model behaves on real people. The phantom's "
    "groups are drawn cues (skin colour, hair, face shape), not real demographic groups, and its faces "
    "are unlike photographs, so neither its expressivity nor its error rates are evidence of bias or "
    "fairness on real faces. Audit a manifest of real face images before any claim about people."
)


def check_phantom_attrs(attrs: str | Sequence[str]) -> None:
    """Raise InputError when `attrs` names an attribute the phantom faces do not provide."""
    items = attrs.split(",") if isinstance(attrs, str) else list(attrs)
    names = [str(a).split(":", 1)[0].strip() for a in items if str(a).strip()]
    unknown = [n for n in names if n not in PHANTOM_ATTRIBUTES]
    if unknown:
        raise InputError(
            f"The built-in phantom faces (used when no manifest is given) have no attribute "
            f"{', '.join(repr(u) for u in unknown)}; they provide {', '.join(PHANTOM_ATTRIBUTES)}. "
            "Choose among those, or audit your own faces with a manifest "
            "(--data on the command line, manifest= in Python)."
        )


def phantom_size(spec: Any) -> int:
    """The phantom's image size for a model's input spec: its square size, else 112 (the ArcFace crop)."""
    h, w = getattr(spec, "height", None), getattr(spec, "width", None)
    if isinstance(h, int) and h == w and 32 <= h <= 512:
        return h
    return 112


def phantom_data(cache_root: str | Path, *, n_faces: int = DEFAULT_N_FACES, size: int = 112, seed: int = 0,
                 progress: bool | None = None) -> tuple[Path, dict[str, Any]]:
    """Generate (or reuse) the default phantom set under `cache_root`; return (manifest, `data` note).

    The note goes into the report's `data` section: `synthetic`, `source`, the
    statement of what synthetic faces do and do not tell, and the generator's
    settings. `n_faces` is rounded down to whole identities of 10 images.
    """
    from faceaudit.demo.phantom import generate_phantom

    n_ids = max(2, int(n_faces) // IMAGES_PER_IDENTITY)
    folder = Path(cache_root) / f"phantom-v{PHANTOM_DATA_VERSION}-n{n_ids * IMAGES_PER_IDENTITY}-s{size}-seed{seed}"
    manifest = folder / "manifest.csv"
    if manifest.is_file():  # written last and atomically: present means complete
        log.info("phantom faces reused from %s", folder)
    else:
        manifest = generate_phantom(
            folder, n_identities=n_ids, images_per_identity=IMAGES_PER_IDENTITY, size=size, seed=seed,
            identity_prefix="phantom", hard_group=None, progress_enabled=progress,
        )
    note = {
        "synthetic": True,
        "source": "faceaudit built-in phantom faces",
        "statement": SYNTHETIC_STATEMENT,
        "phantom": {
            "n_faces": n_ids * IMAGES_PER_IDENTITY, "n_identities": n_ids,
            "images_per_identity": IMAGES_PER_IDENTITY, "size": size, "seed": seed,
            "injected_disparity": None, "version": PHANTOM_DATA_VERSION,
        },
    }
    return manifest, note


__all__ = [
    "DEFAULT_N_FACES",
    "PHANTOM_ATTRIBUTES",
    "SYNTHETIC_STATEMENT",
    "check_phantom_attrs",
    "phantom_data",
    "phantom_size",
]
