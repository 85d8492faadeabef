"""Form fields built from an action's own inputs: their help text and bounds come from the
registry, so the page says exactly what the API checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sendworx.api.registry import Input, InputKind, Registry


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    help: str
    kind: str  # "number", "text" or "checkbox"
    value: str
    error: str = ""
    minimum: int | None = None
    maximum: int | None = None


def action_inputs(registry: Registry, controller: str, action: str) -> dict[str, Input]:
    return {spec.name: spec for spec in registry.find(controller).actions[action].inputs}


def fields(
    inputs: Mapping[str, Input],
    labels: Mapping[str, str],
    values: Mapping[str, Any],
    problems: Mapping[str, str],
    checkboxes: tuple[str, ...] = (),
) -> list[Field]:
    """One field per labelled input, in the labels' order, showing `values`."""
    shown = []
    for name, label in labels.items():
        spec = inputs[name]
        schema = spec.schema or {}
        kind = (
            "checkbox"
            if name in checkboxes
            else "number"
            if spec.kind is InputKind.INTEGER
            else "text"
        )
        value = values.get(name, "")
        shown.append(
            Field(
                name=name,
                label=label,
                help=spec.help,
                kind=kind,
                value="" if value is None else str(value),
                error=problems.get(name, ""),
                minimum=schema.get("minimum"),
                maximum=schema.get("maximum"),
            )
        )
    return shown
