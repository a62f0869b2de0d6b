"""Loading a config: YAML in, a validated Config out, and every way that fails as one sentence
naming the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gammaface.config.schema import Config
from gammaface.common.errors import UserError
from gammaface.common.yamlio import load as load_yaml
from gammaface.common.yamlio import why as yaml_why

def _describe(error: ErrorDetails, source: str) -> str:
    loc = ".".join(str(p) for p in error["loc"])
    kind = error["type"]
    msg = error["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{loc}'."
    if not loc and kind == "value_error":  # a rule across sections names its own keys
        return f"{source}: {msg}."
    where = f"key '{loc}'" if loc else "the top level"
    if kind == "missing":
        return f"{source}: {where} is required."
    value = error.get("input")
    shown = "" if isinstance(value, dict) else f" = {value!r}"
    return f"{source}: {where}{shown} is invalid: {msg[0].lower() + msg[1:]}."


def from_dict(data: dict[str, Any], source: str = "config") -> Config:
    """Validate a plain dict; a bad key or value becomes one UserError sentence."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: the top level must be a mapping of keys, got {type(data).__name__}.")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise UserError(_describe(exc.errors()[0], source)) from None


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config file; `overrides` are dotted keys set on top (from the command line)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist.")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark is fine
    except UnicodeDecodeError as exc:
        raise UserError(f"config file {path} is not UTF-8 text (byte {exc.start}).") from None
    except OSError as exc:
        raise UserError(f"config file {path} cannot be read: {exc.strerror}.") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"config file {path} is not valid YAML{where}{yaml_why(exc)}.") from None
    if data is None:
        raise UserError(f"config file {path} is empty; an experiment names at least its workdir "
                        "(see jobs/smoke.yaml).")
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of keys, got "
                        f"{type(data).__name__}.")
    for dotted, value in (overrides or {}).items():
        _assign(data, dotted, value)
    return from_dict(data, source=str(path))


def _assign(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for i, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            where = ".".join(parents[:i + 1])
            raise UserError(f"--set {dotted}: '{where}' is a {type(node).__name__} in the config, "
                            "not a section with keys.")
    node[leaf] = value


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
