"""The one measuring pipeline behind `faceaudit run`, `trend` and `compare`.

It owns the run settings (`RunSettings`), the row selection (quick preset,
`max_images`, the estimators' subsample, the minimum number of readable
images, how many failed images are listed), the report schema version, and
`measure(plan, settings)`: extract on the rows every model could read,
estimate every model x layer x attribute in one batched job, fairness and the
input-spec check per model. An audit measures one model; a trend adds its
summary across checkpoints; a comparison adds its differences to the
reference model. Nothing here renders.
"""

from __future__ import annotations

from faceaudit.pipeline.inputs import (
    MIN_MEDIAN_IMAGES_PER_IDENTITY,
    Inputs,
    attribute_inputs,
    attribute_summary,
    check_out_dir,
    identity_attribute,
    load_inputs,
    model_labels,
    open_models,
    prepare_inputs,
    use_default_data,
)
from faceaudit.pipeline.measure import (
    CRITIC_CPU_THREADS,
    FairnessRequest,
    Measured,
    Plan,
    data_section,
    expressivity_entries,
    fairness_by_attribute,
    measure,
    model_cache_dir,
)
from faceaudit.pipeline.outcome import ReportOutcome
from faceaudit.pipeline.provenance import (
    created_now,
    environment_versions,
    model_provenance,
    plugins_used,
    spec_report,
)
from faceaudit.pipeline.settings import (
    EXPRESSIVITY_MAX_ROWS,
    MAX_FAILED_LISTED,
    MIN_READABLE_IMAGES,
    QUICK_ESTIMATOR_OPTIONS,
    QUICK_MAX_DIM,
    QUICK_MAX_IMAGES,
    SCHEMA_VERSION,
    RunSettings,
    cache_root,
    choose_rows,
    estimator_settings,
    layers_spec,
)

__all__ = [
    "CRITIC_CPU_THREADS",
    "EXPRESSIVITY_MAX_ROWS",
    "MAX_FAILED_LISTED",
    "MIN_MEDIAN_IMAGES_PER_IDENTITY",
    "MIN_READABLE_IMAGES",
    "QUICK_ESTIMATOR_OPTIONS",
    "QUICK_MAX_DIM",
    "QUICK_MAX_IMAGES",
    "SCHEMA_VERSION",
    "FairnessRequest",
    "Inputs",
    "Measured",
    "Plan",
    "ReportOutcome",
    "RunSettings",
    "attribute_inputs",
    "attribute_summary",
    "cache_root",
    "check_out_dir",
    "choose_rows",
    "created_now",
    "data_section",
    "environment_versions",
    "estimator_settings",
    "expressivity_entries",
    "fairness_by_attribute",
    "identity_attribute",
    "layers_spec",
    "load_inputs",
    "measure",
    "model_cache_dir",
    "model_provenance",
    "model_labels",
    "open_models",
    "plugins_used",
    "prepare_inputs",
    "spec_report",
    "use_default_data",
]
