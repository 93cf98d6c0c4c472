"""Read a recipe: YAML file or bundled name, plus `dotted.key=value` overrides, into typed dataclasses.

Every error is a `UserError` naming the field: unknown keys get a "did you mean",
wrong types say what was expected. Nothing heavy is imported here.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from hftoolkit.db.uri import redact
from hftoolkit.errors import UserError
from hftoolkit.paths import bundled_recipes_dir
from hftoolkit.recipe.schema import Recipe


def find_recipe(name_or_path: str) -> Path:
    """A recipe path as given, or a bundled recipe by name (`cars_qa` or `cars_qa.yaml`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
    bundled = bundled_recipes_dir() / path.parent / f"{stem}.yaml"
    if path.parent in (Path("."), Path("accelerate")) and bundled.is_file():
        return bundled
    known = sorted(p.stem for p in bundled_recipes_dir().glob("*.yaml"))
    hint = _did_you_mean(stem, known)
    raise UserError(f"recipe '{name_or_path}' is neither a file nor a bundled recipe{hint}; "
                    f"bundled: {', '.join(known)} (see `hftoolkit recipes list`)")


def load_recipe(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Parse, apply overrides and type-check; semantic checks are `recipe.validate`'s job."""
    path = find_recipe(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save the recipe as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)}); "
                        "check indentation and quoting") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a recipe must be a YAML mapping of sections (model:, data:, ...)")
    for item in overrides:
        apply_override(raw, item)
    return build(Recipe, raw, prefix="")


def apply_override(raw: dict, item: str) -> None:
    """`training.learning_rate=1e-4` sets raw['training']['learning_rate'] (value parsed as YAML)."""
    key, sep, value = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"override '{item}' must look like section.key=value, e.g. training.epochs=2")
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    try:
        node[parts[-1]] = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        node[parts[-1]] = value


def build(cls: type, raw: Any, prefix: str) -> Any:
    """Turn a mapping into dataclass `cls`, rejecting unknown keys and wrong types."""
    where = prefix.rstrip(".") or "recipe"
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a mapping of keys, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise UserError(f"unknown key '{prefix}{key}'{_did_you_mean(str(key), names)}; "
                            f"valid keys in {where}: {', '.join(names)}")
        kwargs[key] = coerce(value, hints[key], f"{prefix}{key}")
    return cls(**kwargs)


def coerce(value: Any, hint: Any, name: str) -> Any:
    """Check `value` against a type hint; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        mappings = [a for a in inner if dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and mappings:  # e.g. data.train: {uri: ..., table: ...}
            return build(mappings[0], value, f"{name}.")
        plain = [a for a in inner if not dataclasses.is_dataclass(a)]
        return coerce(value, (plain or inner)[0], name)
    if dataclasses.is_dataclass(hint):
        return build(hint, {} if value is None else value, f"{name}.")
    if origin is typing.Literal:
        if value not in args:
            raise UserError(f"{name}: '{value}' is not allowed{_did_you_mean(str(value), list(args))}; "
                            f"choose one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise UserError(f"{name}: expected a list, got {_show(value)}")
        return [coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{name}: expected a mapping, got {_show(value)}")
        return dict(value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads 5e-4 as a string
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise UserError(f"{name}: expected {hint.__name__}, got {_show(value)}")


def to_dict(recipe: Recipe) -> dict:
    """The resolved recipe as plain data, for saving beside the checkpoint: database passwords masked."""
    data = dataclasses.asdict(recipe)
    for field in ("train", "validation", "extra_text"):
        if isinstance(data["data"][field], dict):
            data["data"][field]["uri"] = redact(data["data"][field]["uri"])
    return data


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]
