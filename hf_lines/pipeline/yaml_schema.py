"""What both recipes (merge and soup) share: YAML writing and the checks their values go through."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Mapping

import yaml

from hf_lines.errors import RecipeError, writing


class YamlDocument:
    """A recipe written as YAML: ``to_dict`` in key order, an optional ``#`` header, atomic errors on write."""

    flow_style: ClassVar[bool | None] = False  # yaml's default_flow_style

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_yaml(self, header: str | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=self.flow_style)
        if header:
            text = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + text
        return text

    def save(self, path: str | Path, header: str | None = None) -> Path:
        path = Path(path)
        with writing(path):
            path.write_text(self.to_yaml(header))
        return path


def show_value(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) < 60 else text[:57] + '...'}"


def check_mapping(data: Any, where: str, allowed: tuple[str, ...]) -> None:
    if not isinstance(data, Mapping):
        raise RecipeError(f"{where}: expected a mapping, got {show_value(data)}")
    for key in data:
        if key not in allowed:
            raise RecipeError(f"{where}.{key}: unknown key; expected one of {', '.join(allowed)}")


def string_value(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise RecipeError(f"{where}: expected a non-empty string, got {show_value(value)}")
    return value


def path_like(value: Any, where: str) -> str:
    if isinstance(value, Path):
        return str(value)
    return string_value(value, where)


def recipe_number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecipeError(f"{where}: expected a number, got {show_value(value)}")
    if not math.isfinite(value):  # YAML's .nan and .inf are floats too
        raise RecipeError(f"{where}: expected a finite number, got {value!r}; give a real value such as 0.5")
    return float(value)
