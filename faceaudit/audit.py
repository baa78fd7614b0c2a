"""One audit, from a model file and a manifest to report.html and report.json.

`run_audit(config)` is what `faceaudit run` does: open the model, load and
validate the manifest (or generate the built-in phantom faces when none is
given), extract the chosen layers in one pass (cached),
estimate the expressivity of every layer x attribute in one batched job,
compute verification fairness per group when identities are known, and write
the report. It orchestrates; the statistics live in the lower rooms.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import logging
import platform
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit import __version__
from faceaudit.errors import FaceAuditError, InputError, ManifestError, OutputError, option

log = logging.getLogger(__name__)

QUICK_MAX_IMAGES = 2000
#: Faster estimator settings used with `quick=True` by run, trend, compare (and the demo's trend).
QUICK_ESTIMATOR_OPTIONS: dict[str, Any] = {
    "max_steps": 300, "min_steps": 50, "eval_every": 25, "patience": 3, "hidden": 32, "batch_size": 256,
    "folds": 3,
}
#: Features are reduced to at most this many principal components with `quick=True`.
QUICK_MAX_DIM = 16
# MINE needs thousands of rows, not millions: larger audits are subsampled for the estimators.
EXPRESSIVITY_MAX_ROWS = 20_000
DEMO_ATTRS = "age,sex,yaw,skin_tone"
DEMO_FAIRNESS_ATTRS = ("skin_tone", "sex")
MAX_FAILED_LISTED = 20


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """What `run`, `trend` and `compare` share: the data, the extraction and the estimators.

    One definition keeps the three commands' flags and defaults in step; each
    command's config adds only what is its own.
    """

    manifest: Path | None = None  # None: the built-in phantom faces (see faceaudit.demo.default_data)
    attrs: str | Sequence[str]
    n_faces: int | None = None  # size of the phantom set when `manifest` is None [default: 1,200]
    layers: str | Sequence[str] = "auto"
    estimator: str = "mine"
    estimator_options: Mapping[str, Any] = field(default_factory=dict)
    seeds: int | None = None
    device: str = "auto"
    quick: bool = False
    pooling: str = "avg"
    batch_size: int = 64
    align: bool = False
    backend: str | None = None
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    #: Per-model input-spec keys (trend, compare), keyed by the model's path, file name or label; win over
    #: the spec keys in backend_options for that model.
    input_specs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Check the input spec against channel-order/normalisation variants on a sample of pairs (see spec_check).
    check_input_spec: bool = True
    cache_dir: Path | None = None
    strict: bool = False
    seed: int = 0
    trust_pickle: bool = False
    max_images: int | None = None
    max_dim: int | None = None
    executor_options: Mapping[str, Any] = field(default_factory=dict)
    progress: bool | None = None

    @property
    def n_seeds(self) -> int:
        return self.seeds if self.seeds is not None else 1


@dataclass(frozen=True, kw_only=True)
class AuditConfig(RunSettings):
    """Everything one audit needs; mirrors the flags of `faceaudit run`."""

    model: Path
    target_fmr: float = 1e-3
    out_dir: Path = Path("faceaudit-report")
    fairness_attrs: Sequence[str] | None = None
    demo: bool = False
    expressivity_max_rows: int | None = EXPRESSIVITY_MAX_ROWS


@dataclass(frozen=True)
class ReportOutcome:
    """Where a report went, the result dictionary and its headline findings."""

    html_path: Path
    json_path: Path
    report: Mapping[str, Any]
    findings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"html_path": str(self.html_path), "json_path": str(self.json_path), "findings": list(self.findings)}

    def expressivity_frame(self) -> Any:
        """Expressivity as a pandas DataFrame: one row per layer x attribute (x checkpoint or model),
        columns named as in the JSON."""
        from faceaudit.report.frames import expressivity_frame

        return expressivity_frame(self.report)

    def fairness_frame(self) -> Any:
        """Verification fairness as a pandas DataFrame: one row per attribute x group, columns as in the JSON."""
        from faceaudit.report.frames import fairness_frame

        return fairness_frame(self.report)

    def _repr_html_(self) -> str:
        """Jupyter shows the findings and the expressivity heatmap inline."""
        from faceaudit.report.frames import notebook_html

        return notebook_html(self.report, where=str(self.html_path))


class AuditOutcome(ReportOutcome):
    """The outcome of `run_audit`: report.html, report.json and the findings."""


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


def plugins_used(models: Iterable[Any] = (), estimators: Iterable[str] = ()) -> str:
    """The installed plugin packages (not faceaudit itself) whose backends or estimators made this report.

    Why: an audit made with a plugin can only be reproduced with the same plugin
    version, so every report names them, e.g. "faceaudit-features 0.1.0 (backend
    features)"; "none" when only faceaudit's own backends and estimators ran.
    """
    from faceaudit.registry import ESTIMATORS, list_plugins

    used: dict[str, list[str]] = {}
    for m in models:
        p = m.provenance
        if p["package"] != "faceaudit":
            used.setdefault(f"{p['package']} {p['version']}", []).append(f"backend {p['backend']}")
    installed = {p.name: p for p in list_plugins(ESTIMATORS)}
    for name in dict.fromkeys(estimators):
        info = installed.get(name)
        if info is not None and info.distribution != "faceaudit":
            used.setdefault(f"{info.distribution} {info.version}", []).append(f"estimator {name}")
    parts = [f"{pkg} ({', '.join(dict.fromkeys(what))})" for pkg, what in sorted(used.items())]
    return "; ".join(parts) or "none"


def model_provenance(model: Any) -> dict[str, str]:
    """`backend_package` and `backend_version` of an opened model, for the report's model entry."""
    p = model.provenance
    return {"backend_package": p["package"], "backend_version": p["version"]}


def environment_versions(
    results: Iterable[Any] = (), models: Iterable[Any] = (), estimators: Iterable[str] = ()
) -> dict[str, str]:
    """Versions that change the numbers, recorded in every report for reproducibility, and where the
    expressivity critics of `results` trained (on CPU their numbers also depend on torch's thread
    count and the number of stacks trained at once); `plugins` names the plugin packages of the
    `models`' backends and of the `estimators` (see `plugins_used`)."""
    import fairlearn
    import onnxruntime
    import torch

    from faceaudit.expressivity.result import describe_runtime

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "fairlearn": fairlearn.__version__,
    }
    env["plugins"] = plugins_used(models, estimators)
    runs = sorted({describe_runtime(r.runtime) for r in results if getattr(r, "runtime", None)})
    if runs:
        env["expressivity_runtime"] = "; ".join(runs)
    return env


def run_audit(config: AuditConfig) -> AuditOutcome:
    """Run one complete audit and write report.html + report.json into `config.out_dir`.

    The library twin of `faceaudit run`; raises `FaceAuditError` subclasses for
    problems with the inputs, before any long work where it can.
    """
    from faceaudit.backends import open_model, select_layers
    from faceaudit.backends.spec import spec_report
    from faceaudit.expressivity import estimate_many
    from faceaudit.features import extract_features, subsample_rows
    from faceaudit._progress import stage_line
    from faceaudit.report import render_findings, render_html, write_report
    from faceaudit.report.markdown import MARKDOWN_NAMES
    from faceaudit.report.render import REPORT_HTML, REPORT_JSON, discard_previous, set_aside_previous

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    out_dir = Path(config.out_dir)
    outputs = (REPORT_HTML, REPORT_JSON, MARKDOWN_NAMES["audit"])
    check_out_dir(out_dir, outputs)
    previous = set_aside_previous(out_dir, outputs)  # an unfinished run must not leave the last report looking like its own

    options = dict(config.backend_options)
    if config.trust_pickle:
        options["trust_pickle"] = True
    model = open_model(config.model, backend=config.backend, **options)
    config, data_note = use_default_data(config, model.input_spec, out_dir)
    manifest, rows, paths, landmarks, warnings = prepare_inputs(config)
    layer_names = select_layers(model, config.layers)
    if model.final_layer not in layer_names and manifest.identities is not None:
        layer_names = [*layer_names, model.final_layer]
    timings["load_s"] = time.perf_counter() - t0
    stage_line("model and manifest", len(rows), "images", timings["load_s"], enabled=config.progress)

    t = time.perf_counter()
    cache_dir = Path(config.cache_dir) if config.cache_dir else out_dir / "cache"
    feats = extract_features(
        model, paths, layer_names, landmarks=landmarks, pooling=config.pooling,
        batch_size=config.batch_size, cache_dir=cache_dir, strict=config.strict, progress=config.progress,
        **dict(config.executor_options),
    )
    timings["features_s"] = time.perf_counter() - t
    used = rows[np.asarray(feats.ok, dtype=bool)]
    if len(used) < 10:
        raise InputError(
            f"Only {len(used)} of {len(rows)} images in {config.manifest} could be read; "
            "check the `path` column and the image files."
        )
    if feats.failed:
        warnings.append(f"{len(feats.failed)} images could not be read and were skipped (listed under data.failed).")

    t = time.perf_counter()
    sub = subsample_rows(len(used), config.expressivity_max_rows, seed=config.seed)
    if len(sub) < len(used):
        warnings.append(
            f"Expressivity was estimated on a random subset of {len(sub)} of {len(used)} images "
            f"(expressivity_max_rows, seed {config.seed}); verification fairness uses all of them."
        )
    attributes = {name: (attr.values[used[sub]], attr.kind) for name, attr in manifest.attributes.items()}
    est_features = {name: arr[sub] for name, arr in feats.features.items()} if len(sub) < len(used) else feats.features
    est_options, max_dim = estimator_settings(config)
    if max_dim is not None:
        est_options["max_dim"] = max_dim
    results = estimate_many(
        est_features, attributes, estimator=config.estimator, seeds=config.n_seeds,
        device=config.device, seed=config.seed, progress=config.progress, **est_options,
    )
    timings["expressivity_s"] = time.perf_counter() - t
    stage_line("expressivity", len(results), "estimates", timings["expressivity_s"], enabled=config.progress)

    t = time.perf_counter()
    fairness, fairness_reason = fairness_by_attribute(manifest, used, feats.features.get(model.final_layer), config, warnings)
    timings["fairness_s"] = time.perf_counter() - t
    stage_line("verification fairness", len(fairness or ()), "attributes", timings["fairness_s"], enabled=config.progress)

    input_check = None
    if config.check_input_spec:
        from faceaudit.spec_check import check_input_spec

        t = time.perf_counter()
        ok = np.flatnonzero(np.asarray(feats.ok, dtype=bool))
        input_check = check_input_spec(
            model, [paths[k] for k in ok], None if manifest.identities is None else manifest.identities[used],
            feats.features.get(model.final_layer), landmarks=None if landmarks is None else landmarks[ok],
            cache_dir=cache_dir, target_fmr=config.target_fmr, seed=config.seed, batch_size=config.batch_size,
        )
        timings["input_check_s"] = time.perf_counter() - t

    report = {
        "schema_version": "1.0",
        "kind": "audit",
        "faceaudit_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "demo": config.demo,
        "model": {
            "path": str(config.model),
            "sha256": model.sha256,
            "backend": model.backend_name,
            **model_provenance(model),
            "input": spec_report(model),
        },
        "input_check": input_check,
        "data": {
            "manifest": str(config.manifest),
            "n_images": len(manifest),
            "n_used": int(len(used)),
            "n_failed": len(feats.failed),
            "failed": [{"path": str(p), "reason": r} for p, r in feats.failed[:MAX_FAILED_LISTED]],
            "attributes": [attribute_summary(a, used) for a in manifest.attributes.values()],
            **data_note,
        },
        "layers": _layer_rows(model, layer_names, feats.features),
        "expressivity": [
            {"layer": layer, "attribute": attr, **res.to_dict()} for (layer, attr), res in results.items()
        ],
        "fairness": fairness,
        "fairness_skipped_reason": fairness_reason,
        "warnings": warnings + list(getattr(manifest, "warnings", []) or []),
        "timings": timings,
        "settings": {
            "attrs": list(manifest.attributes),
            "layers_spec": config.layers if isinstance(config.layers, str) else ",".join(config.layers),
            "estimator": config.estimator,
            "seeds": config.n_seeds,
            "device": config.device,
            "target_fmr": config.target_fmr,
            "pooling": config.pooling,
            "max_dim": max_dim,
            "expressivity_max_rows": config.expressivity_max_rows,
            "expressivity_n_rows": int(len(sub)),
            "executor": config.executor_options.get("executor", "local"),
            "seed": config.seed,
            "quick": config.quick,
            "align": config.align,
        },
        "environment": environment_versions(results.values(), [model], [config.estimator]),
    }
    t = time.perf_counter()
    render_html(report)  # timed once so report.json can state it; the written file is rendered the same way
    timings["report_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    html_path, json_path = write_report(report, out_dir)
    discard_previous(previous)
    return AuditOutcome(html_path, json_path, report, render_findings(report))


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
    from dataclasses import replace

    from faceaudit.demo.default_data import DEFAULT_N_FACES, check_phantom_attrs, phantom_data, phantom_size

    check_phantom_attrs(config.attrs)
    cache_root = Path(config.cache_dir) if config.cache_dir else Path(out_dir) / "cache"
    manifest, note = phantom_data(cache_root, n_faces=config.n_faces or DEFAULT_N_FACES,
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


def estimator_settings(config: RunSettings) -> tuple[dict[str, Any], int | None]:
    """Estimator options and max_dim in effect: the quick preset, then the user's options on top."""
    options: dict[str, Any] = dict(QUICK_ESTIMATOR_OPTIONS) if config.quick else {}
    options.update(dict(config.estimator_options))
    max_dim = config.max_dim if config.max_dim is not None else (QUICK_MAX_DIM if config.quick else None)
    return options, max_dim


def choose_rows(n: int, config: RunSettings) -> np.ndarray:
    """Row indices to audit: all, or a seeded random subset under --quick / max_images."""
    cap = config.max_images or (QUICK_MAX_IMAGES if config.quick else None)
    if cap is None or n <= cap:
        return np.arange(n)
    rng = np.random.default_rng(config.seed)
    return np.sort(rng.choice(n, size=cap, replace=False))


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


def _layer_rows(model: Any, names: Sequence[str], features: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    info = {layer.name: layer for layer in model.layers()}
    ordered = [layer.name for layer in model.layers()]
    rows = []
    for name in names:
        layer = info.get(name)
        pos = ordered.index(name) if name in ordered else len(ordered) - 1
        rows.append({
            "name": name,
            "dim": int(features[name].shape[1]),
            "kind": getattr(layer, "kind", None),
            "shape": list(getattr(layer, "shape", None) or []) or None,
            "depth": round(pos / max(len(ordered) - 1, 1), 4),
        })
    return rows


def fairness_by_attribute(manifest: Any, used: np.ndarray, embeddings: np.ndarray | None, config: AuditConfig,
              warnings: list[str]) -> tuple[list[dict[str, Any]] | None, str | None]:
    """Verification fairness per requested attribute (or intersection); (results, None) or (None, reason)."""
    from faceaudit.fairness import combine_groups, verification_fairness

    if manifest.identities is None:
        return None, "The manifest has no `identity` column, so genuine and impostor pairs cannot be formed."
    if embeddings is None:
        return None, "The final embedding layer was not extracted."
    identities = manifest.identities[used]
    names = list(config.fairness_attrs or manifest.attributes)
    out = []
    for spec in names:
        parts = spec.split("*")
        missing = [p for p in parts if p not in manifest.attributes]
        if missing:
            raise InputError(
                f"{option('--fairness-attrs', 'fairness_attrs')} names {', '.join(missing)}, which is not among "
                f"the audited attributes ({', '.join(manifest.attributes)}); add it to {option('--attrs', 'attrs')}."
            )
        groups = [manifest.attributes[p].groups[used] for p in parts]
        orders = [manifest.attributes[p].group_order for p in parts]
        if len(groups) == 1:
            group, order = groups[0], orders[0]
        else:
            group = combine_groups(*groups)
            order = [" & ".join(combo) for combo in itertools.product(*orders)]
        try:
            res = verification_fairness(
                embeddings, identities, group, target_fmr=config.target_fmr, seed=config.seed,
                attribute=spec, group_order=order,
            )
        except FaceAuditError as exc:
            warnings.append(f"Verification fairness for {spec!r} skipped: {exc}")
            continue
        out.append(res.to_dict())
    if not out:
        return None, "No attribute had enough identities with several images to form genuine pairs."
    return out, None


@dataclass(frozen=True)
class DemoOutcome:
    """The demo's audit report and its trend-across-training report."""

    audit: AuditOutcome
    trend: Any

    @property
    def html_path(self) -> Path:
        return self.audit.html_path

    @property
    def json_path(self) -> Path:
        return self.audit.json_path

    @property
    def findings(self) -> list[str]:
        return self.audit.findings


def run_demo(out_dir: Path, *, seed: int = 0, progress: bool | None = None, trend: bool = True) -> DemoOutcome:
    """Generate the phantom faces and the small demo CNN, audit it like any model, then follow its training.

    Everything a newcomer needs to see a finished audit without bringing files:
    the audit goes through `run_audit` exactly as `faceaudit run` does, and the
    trend report follows the final layer across the CNN's training checkpoints.
    """
    from faceaudit.demo import prepare_demo
    from faceaudit.trend import run_demo_trend

    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    assets = prepare_demo(out_dir / "assets", seed=seed, progress=progress)
    config = AuditConfig(
        model=assets.model, manifest=assets.manifest, attrs=DEMO_ATTRS, fairness_attrs=DEMO_FAIRNESS_ATTRS,
        out_dir=out_dir, seed=seed, demo=True, progress=progress,
    )
    audit = run_audit(config)
    trend_outcome = run_demo_trend(out_dir / "trend", assets, seed=seed, progress=progress) if trend else None
    return DemoOutcome(audit, trend_outcome)


__all__ = ["AuditConfig", "AuditOutcome", "ReportOutcome", "RunSettings", "DemoOutcome", "run_audit", "run_demo"]
