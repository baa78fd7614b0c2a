"""Expressivity across training checkpoints, to trend.html and trend.json.

`run_trend(config)` is what `faceaudit trend` does: open every checkpoint,
match their layers (by name when the checkpoints share an architecture, else
by relative depth), extract features per checkpoint (cached under
``OUT/cache/<label>``), estimate the expressivity of every checkpoint x layer
x attribute in one batched job (keys ``"<label>/<layer>"``), summarise the
trend of each attribute at one chosen layer (default: the final embedding)
and write the report. As a face network trains, the expressivity of yaw, sex
and age at its final layer first rises and then falls while identity keeps
rising (Dhar et al., FG 2020); the report says where each attribute peaks and
whether the later fall is larger than the combined uncertainty.

The helpers shared with `faceaudit compare` (opening several models, matching
their layers, extracting and estimating over all of them at once) live here.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit import __version__
from faceaudit.audit import (
    ReportOutcome,
    RunSettings,
    estimator_settings,
    model_provenance,
    prepare_inputs,
    use_default_data,
)
from faceaudit.errors import InputError, option
from faceaudit.stats import Z_95, se_from_ci
from faceaudit.stats import difference as _significance

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1.0"
#: Below this median number of images per identity, identity expressivity gets a warning.
MIN_MEDIAN_IMAGES_PER_IDENTITY = 5
#: torch threads for critic training on CPU: the critics are tiny, so intra-op threads add only overhead, and on a
#: busy machine they spin (measured 45 s with 2 threads vs 1.5 s with 1 for the same 12 critics on 2 shared cores).
CRITIC_CPU_THREADS: int | None = 1


# --------------------------------------------------------------------------- config and outcome


@dataclass(frozen=True, kw_only=True)
class TrendConfig(RunSettings):
    """Everything one trend needs; mirrors the flags of `faceaudit trend`.

    `checkpoints` are model files in training order; `labels` name them (default:
    from the file names). `layer` is the layer followed across checkpoints
    ("final" = the embedding output, or a layer name); `layers` picks the
    layers of the layers x checkpoints view ("auto", names, globs, or "final"
    for the followed layer only).
    """

    checkpoints: Sequence[Path]
    labels: Sequence[str] | None = None
    layer: str = "final"
    identity_estimator: str = "entropy"
    out_dir: Path = Path("faceaudit-trend")
    z: float = Z_95
    demo: bool = False


class TrendOutcome(ReportOutcome):
    """Where the trend report went, the result dictionary and its headline findings."""


# --------------------------------------------------------------------------- shared helpers (trend + compare)


@dataclass(frozen=True)
class MatchedLayer:
    """One layer row compared across models: its key in the report and the layer it is in each model."""

    key: str
    depth: float
    names: dict[str, str]
    depths: dict[str, float]
    final: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "depth": self.depth, "names": dict(self.names), "depths": dict(self.depths),
                "final": self.final}


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


def _same_architecture(models: Sequence[Any]) -> bool:
    first = [(l.name, tuple(l.shape) if l.shape is not None else None) for l in models[0].layers()]
    return all([(l.name, tuple(l.shape) if l.shape is not None else None) for l in m.layers()] == first
               for m in models[1:])


def match_layers(models: Sequence[Any], labels: Sequence[str], spec: str | Sequence[str],
                 *, extra: Sequence[str] = ()) -> tuple[list[MatchedLayer], str]:
    """Resolve `spec` (+ `extra` specs) on the first model and find the same layers in the others.

    Why: a trend or a comparison puts the same layer of several models side by
    side. Models that share an architecture (identical layer names and shapes)
    are matched by name; otherwise by relative depth (0 = input, 1 = final, from
    `layer_table`): the input to the input, the final embedding to the final
    embedding, and every other layer to the layer of the same kind (else any
    kind) at the nearest depth. Returns the rows in depth order and the method
    ("name" or "depth").
    """
    from faceaudit.backends import layer_table, select_layers

    ref = models[0]
    names = list(select_layers(ref, spec))
    for s in extra:
        names += [n for n in select_layers(ref, s) if n not in names]
    ref_table = {r["name"]: r for r in layer_table(ref)}
    order = [l.name for l in ref.layers()]
    names = sorted(set(names), key=order.index)
    if _same_architecture(models):
        rows = [
            MatchedLayer(n, float(ref_table[n]["depth"]), {lab: n for lab in labels},
                         {lab: float(ref_table[n]["depth"]) for lab in labels}, final=(n == ref.final_layer))
            for n in names
        ]
        return rows, "name"
    tables = [layer_table(m) for m in models]
    rows = []
    for n in names:
        r = ref_table[n]
        is_final = n == ref.final_layer
        is_input = order.index(n) == 0
        picked: dict[str, str] = {}
        depths: dict[str, float] = {}
        for lab, m, table in zip(labels, models, tables):
            if is_final:
                hit = next(t for t in table if t["name"] == m.final_layer)
            elif is_input:
                hit = table[0]
            else:
                pool = [t for t in table[1:] if t["kind"] == r["kind"] and t["name"] != m.final_layer]
                pool = pool or [t for t in table[1:] if t["name"] != m.final_layer] or table
                hit = min(pool, key=lambda t: (abs(float(t["depth"]) - float(r["depth"])), t["depth"]))
            picked[lab] = hit["name"]
            depths[lab] = float(hit["depth"])
        key = "final" if is_final else ("input" if is_input else f"depth {float(r['depth']):.2f}")
        if any(row.key == key for row in rows):
            key = f"depth {float(r['depth']):.4f} ({n})"
        rows.append(MatchedLayer(key, float(r["depth"]), picked, depths, final=is_final))
    return rows, "depth"


def _safe_dir(i: int, label: str) -> str:
    return f"{i:02d}_" + (re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "model")[:60]


def extract_all(models: Sequence[Any], labels: Sequence[str], layer_rows: Sequence[MatchedLayer],
                paths: Sequence[Path], *, landmarks: np.ndarray | None, pooling: str, batch_size: int,
                cache_root: Path, strict: bool, progress: bool | None,
                executor_options: Mapping[str, Any] | None = None,
                ) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray, list[tuple[str, str]]]:
    """Features of the matched layers for every model, on the rows every model could read.

    Why: critics of different models are compared on the same images, so rows
    are the intersection of each model's readable images. Each model's features
    are cached in its own folder under `cache_root`. Returns
    ({label: {layer key: (n_used, dim)}}, ok mask over `paths`, failures).
    """
    from faceaudit.features import extract_features

    sets = []
    for i, (lab, m) in enumerate(zip(labels, models)):
        names = list(dict.fromkeys(row.names[lab] for row in layer_rows))
        log.info("extracting %d layer(s) of %s", len(names), lab)
        fs = extract_features(
            m, paths, names, landmarks=landmarks, pooling=pooling, batch_size=batch_size,
            cache_dir=cache_root / _safe_dir(i, lab), strict=strict, progress=progress,
            **dict(executor_options or {}),
        )
        sets.append(fs)
    ok = np.ones(len(paths), dtype=bool)
    for fs in sets:
        ok &= np.asarray(fs.ok, dtype=bool)
    failed: dict[str, str] = {}
    for fs in sets:
        for p, reason in fs.failed:
            failed.setdefault(p, reason)
    out: dict[str, dict[str, np.ndarray]] = {}
    for lab, fs in zip(labels, sets):
        keep = ok[np.asarray(fs.ok, dtype=bool)]
        out[lab] = {row.key: np.asarray(fs.features[row.names[lab]])[keep] for row in layer_rows}
    return out, ok, sorted(failed.items())


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


def estimate_all(features: Mapping[str, Mapping[str, np.ndarray]], attributes: Mapping[str, tuple[np.ndarray, str]],
                 *, identity: np.ndarray | None, estimator: str, identity_estimator: str, seeds: int,
                 device: str, seed: int, max_dim: int | None, options: Mapping[str, Any],
                 progress: bool | None) -> dict[tuple[str, str, str], Any]:
    """Expressivity of every model x layer x attribute: one batched `estimate_many` call per estimator.

    Why: all critics of a trend or comparison train together as one stack
    (keys "<label>/<layer>"); identity, a categorical attribute with many
    classes, is estimated with `identity_estimator` (default "entropy":
    H(Y) - H(Y|X) from a classifier), in the same call when the estimators agree.
    Returns {(label, layer key, attribute): ExpressivityResult}.
    """
    from faceaudit.expressivity import estimate_many

    keys: dict[str, tuple[str, str]] = {}
    flat: dict[str, np.ndarray] = {}
    for lab, layers in features.items():
        for lkey, arr in layers.items():
            k = f"{lab}/{lkey}"
            keys[k] = (lab, lkey)
            flat[k] = arr
    kw: dict[str, Any] = {"seeds": seeds, "device": device, "seed": seed, "progress": progress, **options}
    if max_dim is not None:
        kw["max_dim"] = max_dim
    calls: list[tuple[str, dict[str, tuple[np.ndarray, str]]]] = []
    main = dict(attributes)
    if identity is not None:
        if identity_estimator == estimator:
            main["identity"] = (identity, "categorical")
        else:
            calls.append((identity_estimator, {"identity": (identity, "categorical")}))
    if main:
        calls.insert(0, (estimator, main))
    out: dict[tuple[str, str, str], Any] = {}
    for est, attrs in calls:
        with _cpu_threads(device, CRITIC_CPU_THREADS):
            res = estimate_many(flat, attrs, estimator=est, **kw)
        for (k, a), r in res.items():
            lab, lkey = keys[k]
            out[(lab, lkey, a)] = r
    return out


@contextlib.contextmanager
def _cpu_threads(device: str, n: int | None) -> Iterator[None]:
    """Run critic training on CPU with `n` torch threads, restoring the previous setting afterwards."""
    import torch

    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    before = torch.get_num_threads()
    if not on_cpu or n is None or n >= before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def entry_se(e: Mapping[str, Any], z: float = Z_95) -> float:
    """Standard error (nats) of one expressivity entry: its `se`, else half its 95% CI width / 1.96."""
    se = e.get("se")
    if isinstance(se, (int, float)) and not isinstance(se, bool) and math.isfinite(se):
        return float(se)
    from_ci = se_from_ci(e.get("ci_low"), e.get("ci_high"))
    return 0.0 if from_ci is None else from_ci


def difference(a: Mapping[str, Any], b: Mapping[str, Any], z: float = Z_95) -> dict[str, Any]:
    """b - a in nats and whether it exceeds the combined uncertainty (the rule of :func:`faceaudit.stats.difference`)."""
    return _significance(float(a.get("mi") or 0.0), float(b.get("mi") or 0.0), entry_se(a), entry_se(b), z)


def environment(
    results: Iterable[Any] = (), models: Iterable[Any] = (), estimators: Iterable[str] = ()
) -> dict[str, str]:
    """Versions of the libraries behind the numbers, where the critics trained and the plugins used
    (as in the audit report)."""
    from faceaudit.audit import environment_versions

    return environment_versions(results, models, estimators)


def created_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


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


def spec_report(model: Any) -> dict[str, Any]:
    """The model's input spec with its source, for a checkpoint or model entry of the report."""
    from faceaudit.backends.spec import spec_report as _report

    return _report(model)


def input_checks(config: Any, models: Sequence[Any], labels: Sequence[str], layer_rows: Sequence[MatchedLayer],
                 measured: Measured, manifest: Any, rows: np.ndarray, paths: Sequence[Path],
                 landmarks: np.ndarray | None, out_dir: Path, *, which: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The input-spec check (see spec_check) of the models labelled `which`, on the rows every model read."""
    from faceaudit.spec_check import check_input_spec

    final = next((r for r in layer_rows if r.final), None)
    keep = np.flatnonzero(np.isin(rows, measured.used))
    ids = None if manifest.identities is None else manifest.identities[measured.used]
    cache_root = Path(config.cache_dir) if config.cache_dir else out_dir / "cache"
    out = {}
    for i, (lab, m) in enumerate(zip(labels, models)):
        if lab not in which:
            continue
        emb = measured.features[lab][final.key] if final is not None else None
        out[lab] = {"model": lab, **check_input_spec(
            m, [paths[k] for k in keep], ids, emb, landmarks=None if landmarks is None else landmarks[keep],
            cache_dir=cache_root / _safe_dir(i, lab), target_fmr=getattr(config, "target_fmr", 1e-3),
            seed=config.seed, batch_size=config.batch_size)}
    return out


def attribute_summaries(manifest: Any, used: np.ndarray) -> list[dict[str, Any]]:
    from faceaudit.audit import attribute_summary

    return [attribute_summary(a, used) for a in manifest.attributes.values()]


# --------------------------------------------------------------------------- trend summary


def _shape(values: Sequence[Mapping[str, Any]], z: float) -> dict[str, Any]:
    """Where an attribute peaks across checkpoints and whether the rise and the fall exceed the uncertainty."""
    mis = [float(e.get("mi") or 0.0) for e in values]
    peak = int(np.argmax(mis))
    rise = difference(values[0], values[peak], z)
    fall = difference(values[-1], values[peak], z)  # peak - last
    overall = difference(values[0], values[-1], z)
    up = rise["significant"] and rise["delta"] > 0
    down = fall["significant"] and fall["delta"] > 0
    if up and down:
        shape = "rise-then-fall"
    elif up:
        shape = "rising"
    elif down or (overall["significant"] and overall["delta"] < 0):
        shape = "falling"
    else:
        shape = "flat"
    return {"peak_index": peak, "rise": rise, "fall": fall, "first_to_last": overall, "shape": shape}


def summarize_trend(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per attribute, at the followed layer: values per checkpoint, the peak, the rise and the fall.

    Why: a reader picks a checkpoint, or checks whether mitigation removed an
    attribute, from exactly these numbers. A rise (first checkpoint to peak) or
    a fall (peak to last checkpoint) counts when it exceeds
    z * sqrt(se_1^2 + se_2^2) (z = settings.z, 1.96 by default).
    """
    z = float(report["settings"].get("z", Z_95))
    labels = [c["label"] for c in report["checkpoints"]]
    focus = report["focus_layer"]
    index = {(e["checkpoint"], e["layer"], e["attribute"]): e for e in report["expressivity"]}
    out = []
    for a in report["settings"]["attrs"]:
        vals = [index.get((lab, focus, a)) for lab in labels]
        if any(v is None for v in vals):
            continue
        s = _shape(vals, z)
        out.append({
            "attribute": a,
            "layer": focus,
            "mi": [v["mi"] for v in vals],
            "ci_low": [v["ci_low"] for v in vals],
            "ci_high": [v["ci_high"] for v in vals],
            "normalized": [v["normalized"] for v in vals],
            "peak": labels[s["peak_index"]],
            **s,
        })
    return out


# --------------------------------------------------------------------------- run_trend


@dataclass(frozen=True)
class Measured:
    """Features and expressivity of several models on the rows every model could read."""

    features: dict[str, dict[str, np.ndarray]]
    failed: list[tuple[str, str]]
    used: np.ndarray
    identity: np.ndarray | None
    identity_info: dict[str, Any] | None
    results: dict[tuple[str, str, str], Any]


def measure_models(config: Any, models: Sequence[Any], labels: Sequence[str], layer_rows: Sequence[MatchedLayer],
                   manifest: Any, rows: np.ndarray, paths: Sequence[Path], landmarks: np.ndarray | None,
                   out_dir: Path, *, what: str, timings: dict[str, float], warnings: list[str]) -> Measured:
    """Extract every model's matched layers (cached per model), then train all critics in one batched job.

    The common middle of `trend` and `compare`; `what` ("checkpoint" or
    "model") names the models in messages. Fills `timings` and `warnings`.
    """
    t = time.perf_counter()
    cache_root = Path(config.cache_dir) if config.cache_dir else out_dir / "cache"
    feats, ok, failed = extract_all(
        models, labels, layer_rows, paths, landmarks=landmarks, pooling=config.pooling,
        batch_size=config.batch_size, cache_root=cache_root, strict=config.strict, progress=config.progress,
        executor_options=config.executor_options,
    )
    timings["features_s"] = time.perf_counter() - t
    used = rows[ok]
    if len(used) < 20:
        raise InputError(
            f"Only {len(used)} of {len(rows)} images in {config.manifest} could be read by every {what}; "
            "check the `path` column and the image files."
        )
    if failed:
        warnings.append(f"{len(failed)} images could not be read by every {what} and were skipped.")

    t = time.perf_counter()
    attrs, identity, id_info = attribute_inputs(manifest, used, warnings)
    options, max_dim = estimator_settings(config)
    results = estimate_all(
        feats, attrs, identity=identity, estimator=config.estimator, identity_estimator=config.identity_estimator,
        seeds=config.n_seeds, device=config.device, seed=config.seed, max_dim=max_dim, options=options,
        progress=config.progress,
    )
    timings["expressivity_s"] = time.perf_counter() - t
    return Measured(feats, failed, used, identity, id_info, results)


def expressivity_entries(results: Mapping[tuple[str, str, str], Any], attr_names: Sequence[str],
                         layer_rows: Sequence[MatchedLayer], labels: Sequence[str], *, what: str) -> list[dict[str, Any]]:
    """The report's expressivity rows, ordered by attribute, layer depth, then model; `what` names the model key."""
    row_by_key = {r.key: r for r in layer_rows}
    return [
        {what: lab, "layer": lkey, "layer_name": row_by_key[lkey].names[lab], "attribute": a, **r.to_dict()}
        for (lab, lkey, a), r in sorted(
            results.items(),
            key=lambda kv: (attr_names.index(kv[0][2]), row_by_key[kv[0][1]].depth, labels.index(kv[0][0])),
        )
    ]


def run_trend(config: TrendConfig) -> TrendOutcome:
    """Estimate expressivity across training checkpoints; write trend.html + trend.json into `config.out_dir`.

    The library twin of `faceaudit trend`; raises `FaceAuditError` subclasses
    for problems with the inputs before any long work where it can.
    """
    from faceaudit.audit import check_out_dir
    from faceaudit.backends import select_layers
    from faceaudit.report.markdown import MARKDOWN_NAMES
    from faceaudit.report.render import discard_previous, set_aside_previous
    from faceaudit.report.trend_render import TREND_HTML, TREND_JSON, render_trend_findings, write_trend

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    out_dir = Path(config.out_dir)
    outputs = (TREND_HTML, TREND_JSON, MARKDOWN_NAMES["trend"])
    check_out_dir(out_dir, outputs)
    previous = set_aside_previous(out_dir, outputs)
    ckpts = [Path(p) for p in config.checkpoints]
    if len(ckpts) < 2:
        raise InputError(f"A trend needs at least two checkpoints; got {len(ckpts)}. Pass them in training order.")
    labels = model_labels(ckpts, config.labels, "checkpoint")
    models = open_models(ckpts, labels, backend=config.backend, backend_options=config.backend_options,
                         trust_pickle=config.trust_pickle, input_specs=config.input_specs)
    config, data_note = use_default_data(config, models[0].input_spec, out_dir)
    manifest, rows, paths, landmarks, warnings = prepare_inputs(config)
    focus_names = select_layers(models[0], config.layer)
    if len(focus_names) != 1:
        raise InputError(
            f"{option('--layer', 'layer=')} {config.layer!r} names {len(focus_names)} layers of {ckpts[0].name}; name exactly one "
            "(or use 'final' for the embedding)."
        )
    layer_rows, method = match_layers(models, labels, config.layers, extra=[focus_names[0]])
    focus = next(r.key for r in layer_rows if r.names[labels[0]] == focus_names[0])
    if method == "depth":
        warnings.append(
            "The checkpoints do not share one architecture (layer names or shapes differ), so layers were matched "
            "by relative depth; the layer rows name the layer used in each checkpoint."
        )
    timings["load_s"] = time.perf_counter() - t0

    m = measure_models(config, models, labels, layer_rows, manifest, rows, paths, landmarks, out_dir,
                       what="checkpoint", timings=timings, warnings=warnings)
    failed, used = m.failed, m.used
    identity, id_info, results = m.identity, m.identity_info, m.results
    options, max_dim = estimator_settings(config)
    t = time.perf_counter()
    checks = input_checks(config, models, labels, layer_rows, m, manifest, rows, paths, landmarks, out_dir,
                          which=labels[-1:]) if config.check_input_spec else {}
    timings["input_check_s"] = time.perf_counter() - t

    attr_names = [a for a in manifest.attributes if a != "identity" or identity is not None]
    expressivity = expressivity_entries(results, attr_names, layer_rows, labels, what="checkpoint")
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "trend",
        "faceaudit_version": __version__,
        "created": created_now(),
        "demo": config.demo,
        "checkpoints": [
            {"label": lab, "index": i, "path": str(p), "sha256": m.sha256, "backend": m.backend_name,
             **model_provenance(m), "final_layer": m.final_layer, "input": spec_report(m), "input_check": checks.get(lab)}
            for i, (lab, p, m) in enumerate(zip(labels, ckpts, models))
        ],
        "data": {
            "manifest": str(config.manifest),
            "n_images": len(manifest),
            "n_used": int(len(used)),
            "n_failed": len(failed),
            "failed": [{"path": str(p), "reason": r} for p, r in failed[:20]],
            "attributes": attribute_summaries(manifest, used),
            "identity": id_info,
            **data_note,
        },
        "layer_matching": method,
        "focus_layer": focus,
        "layers": [r.to_dict() for r in sorted(layer_rows, key=lambda r: r.depth)],
        "expressivity": expressivity,
        "trend": [],
        "warnings": warnings + list(getattr(manifest, "warnings", []) or []),
        "timings": timings,
        "settings": {
            "attrs": attr_names,
            "layer": config.layer,
            "layers_spec": config.layers if isinstance(config.layers, str) else ",".join(config.layers),
            "estimator": config.estimator,
            "identity_estimator": config.identity_estimator if identity is not None else None,
            "estimator_options": {k: v for k, v in options.items()},
            "max_dim": max_dim,
            "seeds": config.n_seeds,
            "device": config.device,
            "pooling": config.pooling,
            "seed": config.seed,
            "quick": config.quick,
            "align": config.align,
            "z": config.z,
            "rule": "a rise or fall counts when |difference| > z * sqrt(se_1^2 + se_2^2) (se from each estimate)",
        },
        "environment": environment(results.values(), models,
                                   [config.estimator] + ([config.identity_estimator] if identity is not None else [])),
    }
    report["trend"] = summarize_trend(report)
    timings["total_s"] = time.perf_counter() - t0
    html_path, json_path = write_trend(report, out_dir)
    discard_previous(previous)
    return TrendOutcome(html_path, json_path, report, render_trend_findings(report))


def run_demo_trend(out_dir: Path, assets: Any, *, seed: int = 0, progress: bool | None = None) -> TrendOutcome:
    """Audit the demo's training checkpoints: the paper's experiment in miniature, kept cheap.

    Follows age, sex, yaw and identity at the final embedding across `assets.checkpoints`
    (from random initialisation to the trained network) with one seed and the
    quick estimator settings; writes trend.html + trend.json into `out_dir`.
    """
    config = TrendConfig(
        checkpoints=[p for _, p in assets.checkpoints], labels=[lab for lab, _ in assets.checkpoints],
        manifest=assets.manifest, attrs="age,sex,yaw,identity", layer="final", layers="final",
        estimator="entropy", seeds=1, quick=True, out_dir=Path(out_dir), seed=seed, demo=True,
        progress=progress, estimator_options={"max_steps": 200},
        check_input_spec=False,  # the demo's audit already checks the final model's spec
    )
    return run_trend(config)


__all__ = [
    "MatchedLayer",
    "TrendConfig",
    "TrendOutcome",
    "match_layers",
    "measure_models",
    "model_labels",
    "run_demo_trend",
    "run_trend",
    "summarize_trend",
]
