"""What a trend and a comparison share: opening several models, measuring them, and their common report keys.

Both views label and open every model file, load the rows once, measure every
model x layer x attribute in one batched job (features cached per model), and
write the same report sections (models, data, layers, expressivity, warnings,
timings, environment); only their summary differs (a trend's rise and fall, a
comparison's differences to the reference). Nothing here renders.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faceaudit import __version__
from faceaudit.backends.selection import MatchedLayer
from faceaudit.errors import InputError
from faceaudit.pipeline.inputs import Inputs, check_out_dir, load_inputs, model_labels, open_models
from faceaudit.pipeline.measure import (
    CRITIC_CPU_THREADS,
    Measured,
    Plan,
    data_section,
    expressivity_entries,
    measure,
    model_cache_dir,
)
from faceaudit.pipeline.provenance import created_now, environment_versions, model_provenance, spec_report
from faceaudit.pipeline.settings import SCHEMA_VERSION, RunSettings, cache_root
from faceaudit.report.render import set_aside_previous

__all__ = ["many_report", "measure_many", "measured_attrs", "open_many"]


def open_many(config: Any, files: Sequence[Any], what: str, outputs: Sequence[str], too_few: str
              ) -> tuple[Any, list[Path], list[str], list[Any], Inputs, list[Path]]:
    """Check the output folder, set an earlier report aside, then label and open every model and load the rows.

    Why one place: a trend and a comparison must fail the same way, before any
    long work, on an unwritable folder, fewer than two models (`too_few`, with
    ``{n}`` for the number given), a bad label, an unopenable model or an
    unreadable manifest. `what` ("checkpoint", "model") names the models in
    messages; `outputs` are the report's file names. Returns the config (with
    `manifest` set to the phantom's when none was given), the files, the labels,
    the opened models, the inputs and the set-aside earlier report (for
    :func:`faceaudit.report.render.discard_previous` once the new one is written).
    """
    out_dir = Path(config.out_dir)
    check_out_dir(out_dir, outputs)
    previous = set_aside_previous(out_dir, outputs)
    paths = [Path(p) for p in files]
    if len(paths) < 2:
        raise InputError(too_few.format(n=len(paths)))
    labels = model_labels(paths, config.labels, what)
    models = open_models(paths, labels, backend=config.backend, backend_options=config.backend_options,
                         trust_pickle=config.trust_pickle, input_specs=config.input_specs)
    config, inputs = load_inputs(config, models[0].input_spec, out_dir)
    return config, paths, labels, models, inputs, previous


def measure_many(config: RunSettings, models: Sequence[Any], labels: Sequence[str], layer_rows: Sequence[MatchedLayer],
                 inputs: Inputs, what: str, timings: dict[str, float], **options: Any) -> tuple[Plan, Measured]:
    """Measure every model x matched layer x attribute of a trend or comparison; returns the plan and the results.

    Features are cached per model under the run's cache folder (``OUT/cache/<label>``), and the critics run
    with the CPU thread budget of the views. `options` go to :func:`faceaudit.pipeline.measure`.
    """
    root = cache_root(config, Path(config.out_dir))
    plan = Plan(models, labels, layer_rows, inputs, [model_cache_dir(root, i, lab) for i, lab in enumerate(labels)],
                what=what)
    return plan, measure(plan, config, cpu_threads=CRITIC_CPU_THREADS, timings=timings, **options)


def measured_attrs(inputs: Inputs, m: Measured) -> list[str]:
    """The attributes estimated, in manifest order: identity only when it was measured."""
    return [a for a in inputs.manifest.attributes if a != "identity" or m.identity is not None]


def _model_entry(label: str, index: int, path: Path, model: Any, m: Measured, reference: bool | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"label": label, "index": index}
    if reference is not None:
        entry["reference"] = reference
    entry.update({"path": str(path), "sha256": model.sha256, "backend": model.backend_name,
                  **model_provenance(model), "final_layer": model.final_layer})
    if reference is not None:
        entry["n_layers"] = len(model.layers())
    entry["input"] = spec_report(model)
    entry["input_check"] = {"model": label, **m.input_checks[label]} if label in m.input_checks else None
    return entry


def many_report(config: Any, files: Sequence[Path], plan: Plan, method: str, m: Measured,
                timings: dict[str, float], *, kind: str, demo: bool) -> dict[str, Any]:
    """The report keys a trend.json and a compare.json share, from what the pipeline measured.

    `kind` "trend" lists the models as `checkpoints`; "compare" as `models`, each
    also saying whether it is the reference (the first) and how many layers it has.
    The view adds its own keys (settings, summary, differences); the typed result
    puts every key in schema order.
    """
    labels, inputs, identity = plan.labels, plan.inputs, m.identity
    compare = kind == "compare"
    estimators = [config.estimator] + ([config.identity_estimator] if identity is not None else [])
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "faceaudit_version": __version__,
        "created": created_now(),
        "demo": demo,
        "models" if compare else "checkpoints": [
            _model_entry(lab, i, p, mod, m, (i == 0) if compare else None)
            for i, (lab, p, mod) in enumerate(zip(labels, files, plan.models))
        ],
        "data": data_section(config, inputs, m, identity=True),
        "layer_matching": method,
        "layers": [r.to_dict() for r in sorted(plan.layer_rows, key=lambda r: r.depth)],
        "expressivity": expressivity_entries(m.results, measured_attrs(inputs, m), plan.layer_rows, labels,
                                             what=str(plan.what)),
        "warnings": inputs.warnings + list(getattr(inputs.manifest, "warnings", []) or []),
        "timings": timings,
        "environment": environment_versions(m.results.values(), plan.models, estimators),
    }
