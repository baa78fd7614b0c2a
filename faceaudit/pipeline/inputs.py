"""The data side of a run: the output folder, the model files, the manifest rows and the attributes.

Shared by run, trend and compare, so the three read data the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit.errors import InputError, ManifestError, OutputError, option
from faceaudit.pipeline.settings import RunSettings, cache_root, choose_rows

__all__ = [
    "MIN_MEDIAN_IMAGES_PER_IDENTITY",
    "Inputs",
    "attribute_inputs",
    "attribute_summary",
    "check_out_dir",
    "identity_attribute",
    "load_inputs",
    "model_labels",
    "open_models",
    "prepare_inputs",
    "use_default_data",
]

#: Below this median number of images per identity, identity expressivity gets a warning.
MIN_MEDIAN_IMAGES_PER_IDENTITY = 5


@dataclass(frozen=True)
class Inputs:
    """The rows a run measures: the manifest, the chosen rows, their image paths and landmarks.

    `warnings` collects the run's warnings from here on; `data_note` is what the
    built-in phantom data adds to the report's `data` section.
    """

    manifest: Any
    rows: np.ndarray
    paths: list[Path]
    landmarks: np.ndarray | None
    warnings: list[str] = field(default_factory=list)
    data_note: dict[str, Any] = field(default_factory=dict)


def load_inputs(config: RunSettings, spec: Any, out_dir: Path) -> tuple[Any, Inputs]:
    """The phantom data when no manifest is given (see `use_default_data`), then the rows (`prepare_inputs`).

    Returns the config (with `manifest` set to the phantom's when it was None) and the inputs.
    """
    config, data_note = use_default_data(config, spec, out_dir)
    manifest, rows, paths, landmarks, warnings = prepare_inputs(config)
    return config, Inputs(manifest, rows, paths, landmarks, warnings, data_note)


def check_out_dir(out_dir: Path, outputs: Sequence[str] = ()) -> None:
    """Fail before hours of work if the report cannot be written: the folder must be writable (probed
    with a fresh, exclusively created name, so a planted link is never followed), and each of the
    `outputs` file names in it must be absent or a faceaudit report (never a user's own file)."""
    from faceaudit._atomic import check_replaceable, probe_writable

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe_writable(out_dir)
    except OSError as exc:
        raise OutputError(
            f"Cannot write to the output folder {out_dir}: {exc.strerror}. "
            "Choose a writable folder with --out."
        ) from exc
    for name in outputs:
        check_replaceable(out_dir / name, fix="Move it away or choose another folder with --out.")


def model_labels(paths: Sequence[Path], labels: Sequence[str] | str | None, what: str = "checkpoint") -> list[str]:
    """Labels for the model files: the given ones, else the file names (with the folder where names repeat).

    Why: the report and the estimate keys name each model; labels must be
    unique and as short as a reader can follow.
    """
    if isinstance(labels, str):
        labels = [s.strip() for s in labels.split(",")]
    if labels:
        out = [str(s).strip() for s in labels]
        if len(out) != len(paths):
            example = option("comma separated, e.g. --labels 0,25k,50k", "e.g. labels=['0', '25k', '50k']")
            raise InputError(
                f"{option('--labels', 'labels')} gives {len(out)} label(s) for {len(paths)} {what}s; give one "
                f"label per {what}, in the same order ({example})."
            )
        if any(not s for s in out):
            raise InputError(f"{option('--labels', 'labels')} has an empty label; give every {what} a name.")
    else:
        out = [Path(p).stem for p in paths]
        if len(set(out)) < len(out):
            out = [f"{Path(p).parent.name}/{Path(p).stem}" if Path(p).parent.name else Path(p).stem for p in paths]
    dup = sorted({s for s in out if out.count(s) > 1})
    if dup:
        raise InputError(
            f"The {what} label(s) {', '.join(map(repr, dup))} repeat; each {what} needs its own label. "
            f"Pass {option('--labels', 'labels=')} with one distinct label per model file."
        )
    return out


def open_models(paths: Sequence[Path], labels: Sequence[str], *, backend: str | None,
                backend_options: Mapping[str, Any], trust_pickle: bool,
                input_specs: Mapping[str, Mapping[str, Any]] | None = None) -> list[Any]:
    """Open every model file (in order), failing before any long work if one cannot be opened.

    `input_specs` gives input-spec keys for single models, keyed by path, file
    name or label (they win over the spec keys in `backend_options`).
    """
    from faceaudit.backends import open_model

    if not paths:
        raise InputError("No model files given; pass at least one checkpoint or model.")
    options = dict(backend_options)
    if trust_pickle:
        options["trust_pickle"] = True
    per_model: list[dict[str, Any]] = [{} for _ in paths]
    for key, keys in (input_specs or {}).items():
        hits = [i for i, (p, lab) in enumerate(zip(paths, labels)) if key in (str(p), Path(p).name, lab)]
        if len(hits) != 1:
            known = ", ".join(f"{lab} ({Path(p).name})" for p, lab in zip(paths, labels))
            what = "none" if not hits else f"{len(hits)} of them"
            raise InputError(f"--input-spec names {key!r}, which matches {what} of the models given ({known}); "
                             "name one model by its path, file name or label.")
        per_model[hits[0]].update(keys)
    return [open_model(p, backend=backend, **{**options, **extra}) for p, extra in zip(paths, per_model)]


def use_default_data(config: Any, spec: Any, out_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Without a manifest, generate the built-in phantom faces into the cache; return (config, `data` note).

    Shared by run, trend and compare: the phantom is drawn at the model's input
    size (`spec`), after `attrs` are checked against what it provides. With a
    manifest, the config is returned unchanged and the note is empty.
    """
    if config.manifest is not None:
        if config.n_faces is not None:
            raise InputError(
                "--n-faces (n_faces= in Python) sets the number of built-in phantom faces, used only without a "
                "manifest; drop it when you pass --data (manifest=)."
            )
        return config, {}
    from faceaudit.demo.default_data import DEFAULT_N_FACES, check_phantom_attrs, phantom_data, phantom_size

    check_phantom_attrs(config.attrs)
    manifest, note = phantom_data(cache_root(config, out_dir), n_faces=config.n_faces or DEFAULT_N_FACES,
                                  size=phantom_size(spec), seed=config.seed, progress=config.progress)
    return replace(config, manifest=manifest), note


def prepare_inputs(config: RunSettings) -> tuple[Any, np.ndarray, list[Path], np.ndarray | None, list[str]]:
    """Load the manifest, pick the rows (quick / max_images) and the landmarks for --align.

    Shared by run, trend and compare, so the three read data the same way.
    Returns (manifest, rows, image paths, landmarks or None, warnings).
    """
    from faceaudit.data import load_manifest

    warnings: list[str] = []
    manifest = load_manifest(config.manifest, config.attrs)
    rows = choose_rows(len(manifest), config)
    if len(rows) < len(manifest):
        warnings.append(f"Used a random subset of {len(rows)} of {len(manifest)} images (seed {config.seed}).")
    landmarks = None
    if config.align:
        if manifest.landmarks is None:
            raise ManifestError(
                f"{option('--align', 'align=True')} needs landmark columns lm_x1, lm_y1, ..., lm_x5, lm_y5 in "
                f"{config.manifest}; add them or drop {option('--align', 'align=True')}."
            )
        landmarks = manifest.landmarks[rows]
    return manifest, rows, [manifest.paths[i] for i in rows], landmarks, warnings


def attribute_summary(attr: Any, used: np.ndarray) -> dict[str, Any]:
    """Valid/missing counts and group sizes of one attribute over the rows actually audited."""
    groups = attr.groups[used]
    valid = np.array([g is not None for g in groups])
    labels, counts = np.unique(groups[valid].astype(str), return_counts=True) if valid.any() else ([], [])
    order = {g: i for i, g in enumerate(attr.group_order)}
    pairs = sorted(zip(labels, counts), key=lambda lc: order.get(lc[0], len(order)))
    return {
        "name": attr.name,
        "kind": attr.kind,
        "n_valid": int(valid.sum()),
        "n_missing": int((~valid).sum()),
        "groups": [{"label": str(lab), "count": int(c)} for lab, c in pairs],
    }


def identity_attribute(values: np.ndarray, warnings: list[str]) -> tuple[np.ndarray, dict[str, Any]] | None:
    """Identity labels ready for estimation: identities with one image dropped; a warning when too few per person.

    Why: identity is a categorical attribute with many classes; a class seen
    once cannot be both trained on and tested, and with few images per person
    the classifier-based estimate is a loose lower bound.
    """
    vals = np.array([None if v is None or (isinstance(v, float) and math.isnan(v)) or str(v) == "" else str(v)
                     for v in values], dtype=object)
    present = [v for v in vals if v is not None]
    if not present:
        warnings.append("identity expressivity skipped: no row has an identity label.")
        return None
    ids, counts = np.unique(np.asarray(present, dtype=str), return_counts=True)
    single = set(ids[counts < 2].tolist())
    if single:
        vals = np.array([None if v in single else v for v in vals], dtype=object)
        warnings.append(
            f"identity expressivity: {len(single)} identities with a single image were left out "
            "(a person seen once cannot be both learnt and tested)."
        )
    kept = counts[counts >= 2]
    if len(kept) < 2 or kept.sum() < 20:
        warnings.append(
            f"identity expressivity skipped: only {len(kept)} identities with two or more images "
            f"({int(kept.sum())} images); add more images per person."
        )
        return None
    median = float(np.median(kept))
    if median < MIN_MEDIAN_IMAGES_PER_IDENTITY:
        warnings.append(
            f"identity expressivity rests on a median of {median:g} images per identity (fewer than "
            f"{MIN_MEDIAN_IMAGES_PER_IDENTITY}): the classifier sees too few examples of each person, so the estimate "
            "is a loose lower bound; compare it across checkpoints or models, not with H(identity)."
        )
    return vals, {"n_identities": int(len(kept)), "median_images_per_identity": median,
                  "n_single_dropped": len(single)}


def attribute_inputs(manifest: Any, used: np.ndarray, warnings: list[str]
                     ) -> tuple[dict[str, tuple[np.ndarray, str]], np.ndarray | None, dict[str, Any] | None]:
    """The attributes to estimate (identity separately, prepared by `identity_attribute`)."""
    attrs: dict[str, tuple[np.ndarray, str]] = {}
    identity = None
    id_info = None
    for name, attr in manifest.attributes.items():
        if name == "identity":
            got = identity_attribute(attr.values[used], warnings)
            if got is not None:
                identity, id_info = got
            continue
        attrs[name] = (attr.values[used], attr.kind)
    return attrs, identity, id_info
