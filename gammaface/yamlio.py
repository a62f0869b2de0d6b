"""YAML reading with YAML 1.2 booleans: only true/false are booleans.

Under PyYAML's default (YAML 1.1) rules the class names `yes` and `no` would silently become
True and False.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


YAMLError = yaml.YAMLError


class _Loader(yaml.SafeLoader):
    pass


_Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
