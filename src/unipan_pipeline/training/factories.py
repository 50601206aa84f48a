"""Import-path factories: ``"package.module:attr.sub"`` -> the object (model / data set / config builders)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def resolve_import_path(path: str) -> Callable[..., Any]:
    """``"pkg.module:attr.sub"`` (or ``"pkg.module.attr"``) -> the object; clear error when missing."""
    if ":" in path:
        module_name, _, attr_path = path.partition(":")
    else:
        module_name, _, attr_path = path.rpartition(".")
    if not module_name or not attr_path:
        raise ValueError(f"import path {path!r} must look like 'package.module:attribute'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"import path {path!r}: cannot import module {module_name!r}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ImportError(
                f"import path {path!r}: {module_name!r} has no attribute {attr_path!r}"
            ) from exc
    if not callable(obj):
        raise TypeError(f"import path {path!r} does not name a callable")
    return obj
