"""Load YAML into pydantic models; errors name the file, line and key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from schemahub.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def default_mappings_dir() -> Path:
    """SCHEMAHUB_MAPPINGS, else the repo's mappings/ (a checkout), else the copy inside the installed package
    (a wheel, see setup.py), else mappings/ beside the package (the Lambda code asset)."""
    env = os.environ.get("SCHEMAHUB_MAPPINGS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    checkout = here.parent.parent / "mappings" if here.parent.name == "functions" else None
    for candidate in (checkout, here / "mappings", here.parent / "mappings"):
        if candidate is not None and candidate.is_dir():
            return candidate
    return here.parent.parent / "mappings"


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that also records the line of every mapping key and sequence item."""


def _load_with_lines(text: str, path: str) -> tuple[Any, dict[tuple, int]]:
    lines: dict[tuple, int] = {}
    try:
        node = yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if node is None:
        return None, lines

    def walk(n: yaml.Node, loc: tuple) -> None:
        lines.setdefault(loc, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            seen: set = set()
            for k, v in n.value:
                key = k.value
                if key in seen:
                    raise ConfigError(f"{path}:{k.start_mark.line + 1}: key {'.'.join(map(str, loc + (key,)))!r} is duplicated")
                seen.add(key)
                lines[loc + (key,)] = k.start_mark.line + 1
                walk(v, loc + (key,))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                lines[loc + (i,)] = item.start_mark.line + 1
                walk(item, loc + (i,))

    walk(node, ())
    data = _LineLoader(text).get_single_data()
    return data, lines


def _line_for(loc: tuple, lines: dict[tuple, int]) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def load_model(model: type[M], path: str | Path) -> M:
    """Parse and validate one YAML file; raise ConfigError naming file, line and key."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    data, lines = _load_with_lines(text, path)
    try:
        return model.model_validate(data, context={"path": path, "lines": lines})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, path, lines)) from None


def _yaml_loc(err: dict, lines: dict[tuple, int]) -> tuple:
    """The error's location as YAML keys: without the tags pydantic adds for tagged unions."""
    kept: tuple = ()
    parts = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    for i, p in enumerate(parts):
        tagged = any(kept + (d,) in lines for d in ("kind", "type"))
        if isinstance(p, str) and kept + (p,) not in lines and tagged and i < len(parts) - 1:
            continue  # 'id_forward' in source.trades.pagination.id_forward.start is the union's tag
        kept += (p,)
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        kept += (str(err.get("ctx", {}).get("discriminator", "")).strip("'"),)
    return kept


def format_validation_error(e: ValidationError, path: str, lines: dict[tuple, int]) -> str:
    """One line per problem: 'file:line: key: message'."""
    out = []
    for err in e.errors(include_url=False):
        loc = _yaml_loc(err, lines)
        # A missing key has no line of its own: point at its nearest parent.
        line = _line_for(loc, lines)
        key = ".".join(str(p) for p in loc) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        out.append(f"{path}:{line or '?'}: {key}: {msg}")
    return "\n".join(out)
