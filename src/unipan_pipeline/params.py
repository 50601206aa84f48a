"""Typed parameters at the node boundary: one strict converter from Kedro's ``params:`` to dataclasses.

A node hands its ``params:<namespace>`` mapping to :func:`from_params` with the dataclass it stands for;
nested dataclass fields (``model: ModelConfig``, ``trainer: TrainerConfig``, ...) are converted the same
way, lists become tuples where the field is a tuple, and every mistake is a :class:`ParameterError` that
names the key, where it sits (``params:demo.trainer``) and the conf file(s) defining that namespace::

    params:demo.trainer: unknown key(s) ['lr_step']; known: [...] (conf/base/parameters_demo.yml)

The YAML files under ``conf/`` are the one source of presets; the dataclasses hold no preset values of their
own beyond their documented defaults.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Collection, Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

CONF_ROOT = Path("conf")


class ParameterError(ValueError):
    """A ``params:`` mapping that does not fit its dataclass (unknown / missing key, bad value)."""


def conf_files(namespace: str, conf_root: Path = CONF_ROOT) -> list[str]:
    """The parameters files under ``conf_root`` (every environment) that define the top-level key of
    ``namespace`` (``demo`` of ``params:demo.trainer``); empty outside a project checkout."""
    top = namespace.removeprefix("params:").split(".", 1)[0]
    if not top:
        return []
    pattern = re.compile(rf"^{re.escape(top)}\s*:", re.MULTILINE)
    return [p.as_posix() for p in _parameter_files(conf_root.resolve()) if pattern.search(_read(p))]


@cache
def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _parameter_files(conf_root: Path) -> list[Path]:
    if not conf_root.is_dir():
        return []
    found = sorted(conf_root.glob("*/parameters*.yml")) + sorted(conf_root.glob("*/parameters*/**/*.yml"))
    cwd = Path.cwd().resolve()
    return [p.relative_to(cwd) if p.is_relative_to(cwd) else p for p in found]


def located(where: str) -> str:
    """``where`` followed by the conf file(s) that define its namespace, when there are any."""
    files = conf_files(where)
    return f"{where} ({', '.join(files)})" if files else where


def check_mapping(
    data: Any,
    where: str,
    *,
    known: Collection[str],
    required: Collection[str] = (),
    noun: str = "key",
) -> dict[str, Any]:
    """``data`` as a dict after checking it is a mapping without unknown and with all ``required`` keys;
    else :class:`ParameterError` naming the keys, ``where`` and its conf file."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ParameterError(f"{located(where)}: must be a mapping, got {type(data).__name__}")
    missing = sorted(set(required) - set(data))
    unknown = sorted(set(data) - set(known))
    problems = []
    if missing:
        problems.append(f"missing {noun}(s) {missing}")
    if unknown:
        problems.append(f"unknown {noun}(s) {unknown}; known: {sorted(known)}")
    if problems:
        files = conf_files(where)
        suffix = f" ({', '.join(files)})" if files else ""
        raise ParameterError(f"{where}: " + "; ".join(problems) + suffix)
    return dict(data)


def from_params(cls: type[T], data: Mapping[str, Any] | None, where: str, *, noun: str = "key") -> T:
    """The dataclass ``cls`` from a (YAML-loaded) mapping, strictly.

    Args:
        cls: a dataclass; its fields without default are required keys.
        data: the mapping (``None``: all defaults).
        where: where the mapping sits, e.g. ``params:demo.trainer``; quoted in every error.
        noun: what a key is called in errors (``"augmentation parameter"``).

    Raises:
        ParameterError: unknown or missing keys, or a value the dataclass refuses (its ``ValueError`` /
            ``TypeError``, prefixed with ``where``).
    """
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    required = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    values = check_mapping(data, where, known=fields, required=required, noun=noun)
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        values[key] = _convert(hints[key], value, f"{where}.{key}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ParameterError):
            raise
        raise ParameterError(f"{located(where)}: {exc}") from exc


def _convert(hint: Any, value: Any, where: str) -> Any:
    """A nested dataclass from its mapping; a tuple from a list where the field is a tuple."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    if value is None:
        return None
    for option in options:
        if dataclasses.is_dataclass(option) and isinstance(value, Mapping):
            return from_params(option, value, where)  # type: ignore[arg-type]
        if typing.get_origin(option) is tuple and isinstance(value, list):
            return tuple(value)
    return value


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)
