"""Moved to the :mod:`unipan_pipeline.tracking` package; the names stay importable here for old imports.
Nothing in the project imports this module."""

from __future__ import annotations

from unipan_pipeline.tracking.models import (  # noqa: F401 - an alias
    input_example,
    log_model_pyfunc,
    model_requirements,
    model_signature,
)
from unipan_pipeline.tracking.params import flatten_params, render_param  # noqa: F401 - an alias
from unipan_pipeline.tracking.registry import (  # noqa: F401 - an alias
    PromotionResult,
    register_and_promote,
    registered_model_name,
)
from unipan_pipeline.tracking.runs import MlflowLogger  # noqa: F401 - an alias
from unipan_pipeline.tracking.store import (  # noqa: F401 - an alias
    artifact_root_for,
    configure_tracking,
    get_or_create_experiment,
    tracking_uri_for,
)
