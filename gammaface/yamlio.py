"""YAML reading with YAML 1.2 booleans: only true/false are booleans, and no key twice.

Under PyYAML's default (YAML 1.1) rules the class names `yes` and `no` would silently become
True and False, and a key given twice in one mapping would silently keep the last value.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


YAMLError = yaml.YAMLError


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names one key twice."""


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise DuplicateKeyError(None, None, f"key {key!r} is given twice",
                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
