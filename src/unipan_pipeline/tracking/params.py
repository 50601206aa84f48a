"""Parameters as MLflow stores them: nested dicts flattened to ``a.b.c``, values rendered and truncated."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

DEFAULT_MAX_PARAM_LENGTH = 500
MLFLOW_MAX_PARAM_LENGTH = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH in MLflow 3.x


def flatten_params(params: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``; lists/tuples stay values (rendered as JSON by the logger)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            if value:
                flat.update(flatten_params(value, name, sep))
            else:
                flat[name] = "{}"
        else:
            flat[name] = value
    return flat


def render_param(value: Any, max_length: int = DEFAULT_MAX_PARAM_LENGTH) -> str:
    """String form of a parameter value, truncated to ``max_length`` characters (ending in ``...``)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list | tuple):
        try:
            text = json.dumps(list(value))
        except TypeError:
            text = str(list(value))
    else:
        text = str(value)
    max_length = min(max_length, MLFLOW_MAX_PARAM_LENGTH)
    if len(text) > max_length:
        text = text[: max_length - 3] + "..."
    return text
