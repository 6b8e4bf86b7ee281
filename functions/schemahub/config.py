"""Load YAML into pydantic models; errors name the file, line and key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from schemahub import settings
from schemahub.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def default_mappings_dir() -> Path:
    """SCHEMAHUB_MAPPINGS, else the repo's mappings/ (a checkout), else the copy inside the installed package
    (a wheel, see setup.py), else mappings/ beside the package (the Lambda code asset)."""
    env = settings.mappings()
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    checkout = here.parent.parent / "mappings" if here.parent.name == "functions" else None
    for candidate in (checkout, here / "mappings", here.parent / "mappings"):
        if candidate is not None and candidate.is_dir():
            return candidate
    return here.parent.parent / "mappings"


#: Our YAML files are small (the biggest, a full seed of every exchange, is a few hundred KiB).
MAX_YAML_BYTES = 2 * 1024 * 1024


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases: a few lines of anchors and aliases can expand to billions of nodes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not allowed in schemahub files: write the value out",
                event.start_mark)
        return super().compose_node(parent, index)


def _yaml_error(e: yaml.YAMLError, path: str) -> ConfigError:
    mark = getattr(e, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark else path
    problem = getattr(e, "problem", None) or str(e)
    if isinstance(e, yaml.constructor.ConstructorError) and "tag" in problem:
        problem = f"{problem.split(' for the tag ')[-1]} tags are not allowed: schemahub files are plain YAML"
    return ConfigError(f"{where}: invalid YAML: {problem}")


def _load_with_lines(text: str, path: str) -> tuple[Any, dict[tuple, int]]:
    lines: dict[tuple, int] = {}
    loader = _LineLoader(text)
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None, lines

            def walk(n: yaml.Node, loc: tuple) -> None:
                lines.setdefault(loc, n.start_mark.line + 1)
                if isinstance(n, yaml.MappingNode):
                    seen: set = set()
                    for k, v in n.value:
                        key = k.value
                        if key in seen:
                            raise ConfigError(
                                f"{path}:{k.start_mark.line + 1}: key {'.'.join(map(str, loc + (key,)))!r} is duplicated")
                        seen.add(key)
                        lines[loc + (key,)] = k.start_mark.line + 1
                        walk(v, loc + (key,))
                elif isinstance(n, yaml.SequenceNode):
                    for i, item in enumerate(n.value):
                        lines[loc + (i,)] = item.start_mark.line + 1
                        walk(item, loc + (i,))

            walk(node, ())
            data = loader.construct_document(node)
        except yaml.YAMLError as e:
            raise _yaml_error(e, path) from None
        except RecursionError:
            raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    return data, lines


def read_yaml(path: str | Path) -> tuple[Any, dict[tuple, int]]:
    """Read one YAML file: (data, line of every key); ConfigError naming the file (and line) otherwise."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_YAML_BYTES // (1024 * 1024)} MiB: not a schemahub file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}): "
                          "save the file as UTF-8") from None
    return _load_with_lines(text, path)


def line_for(loc: tuple, lines: dict[tuple, int]) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def load_model(model: type[M], path: str | Path) -> M:
    """Parse and validate one YAML file; raise ConfigError naming file, line and key."""
    return load_model_with_lines(model, path)[0]


def load_model_with_lines(model: type[M], path: str | Path) -> tuple[M, dict[tuple, int]]:
    """load_model, plus the line of every key (for checks after validation)."""
    path = str(path)
    data, lines = read_yaml(path)
    try:
        obj = model.model_validate(data, context={"path": path, "lines": lines})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, path, lines)) from None
    _numbers_are_not_booleans(data, obj, path, lines)
    return obj, lines


_ABSENT = object()


def _child(obj: Any, key: Any) -> Any:
    if isinstance(obj, BaseModel):
        return getattr(obj, key, _ABSENT) if key in type(obj).model_fields else _ABSENT
    if isinstance(obj, dict):
        return obj.get(key, _ABSENT)
    if isinstance(obj, (list, tuple)) and isinstance(key, int) and key < len(obj):
        return obj[key]
    return _ABSENT


def _numbers_are_not_booleans(data: Any, obj: Any, path: str, lines: dict[tuple, int], loc: tuple = ()) -> None:
    """pydantic reads `page_size: true` as 1; a YAML boolean is never a number here."""
    if isinstance(data, bool):
        if isinstance(obj, (int, float, Decimal)) and not isinstance(obj, bool):
            key = ".".join(map(str, loc))
            raise ConfigError(f"{path}:{line_for(loc, lines) or '?'}: {key}: expected a number, "
                              f"got {str(data).lower()}")
        return
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        return
    for k, v in items:
        child = _child(obj, k)
        if child is not _ABSENT:
            _numbers_are_not_booleans(v, child, path, lines, loc + (k,))


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
        line = line_for(loc, lines)
        key = ".".join(str(p) for p in loc) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        out.append(f"{path}:{line or '?'}: {key}: {msg}")
    return "\n".join(out)
