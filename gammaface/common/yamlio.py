"""YAML reading with YAML 1.2 booleans: only true/false are booleans, no key twice, no alias.

Under PyYAML's default (YAML 1.1) rules the class names `yes` and `no` would silently become
True and False, and a key given twice in one mapping would silently keep the last value. An
alias (`*name`, a merge `<<: *name` among them) is refused where it is read: a few hundred bytes
of aliases nested ten deep expand to billions of nodes, and a config has no need of them.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


YAMLError = yaml.YAMLError


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names one key twice."""


class AliasError(yaml.composer.ComposerError):
    """The text uses an alias."""


class _Loader(yaml.SafeLoader):
    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise AliasError(None, None, f"the alias *{event.anchor} is not accepted (write the "
                             "value out)", event.start_mark)
        return super().compose_node(parent, index)

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


def why(exc: yaml.YAMLError) -> str:
    """`: <problem>` for the refusals of this module (a key twice, an alias), which the reader
    can act on; empty for a syntax error, whose line says enough."""
    if isinstance(exc, (DuplicateKeyError, AliasError)) and exc.problem:
        return f": {exc.problem}"
    return ""
