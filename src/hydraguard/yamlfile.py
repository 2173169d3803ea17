"""Reviewed YAML files (scenarios, detection rules) parsed into pydantic models, with errors naming every field."""

from __future__ import annotations

from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def parse_yaml(text: str, model: type[Model], source: str, error: type[Exception], what: str) -> Model:
    """`text` as a `model`; any problem raises `error` with `source` and, for validation, one line per field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{source}: {what} is a YAML mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {exc.error_count()} invalid field(s):"]
        for err in exc.errors():
            where = ".".join(str(part) for part in err["loc"]) or "(top level)"
            lines.append(f"  {where}: {err['msg']}")
        raise error("\n".join(lines)) from exc
