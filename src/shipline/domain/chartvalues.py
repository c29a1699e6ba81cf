"""A release's image in a chart's values.yaml: each key's scalar replaced where it stands.

The file is composed only to find where the scalars are; each is replaced by a splice
of its characters, so every other byte (comments and their columns, quotes, key order,
flow style, line endings) stays the author's, as Helm then packages values.yaml as it
is.  The file is read as Helm reads values (YAML 1.1, sigs.k8s.io/yaml), with libyaml
where PyYAML has it: in a step server's copy, where each page a call touches is copied,
a round trip through ruamel.yaml cost 5-8 ms of CPU.

A value written plain must stay a string for a YAML 1.1 and a 1.2 reader alike (`42`,
`yes`, `1.5`, `0o17` would not): such a value is quoted.  Where a key is not there as a
one-line scalar of its own (missing, under a list, a block scalar, an anchor or alias),
`set_scalars` gives None and the caller edits a parsed tree instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import yaml
from ruamel.yaml.nodes import ScalarNode as _RuamelScalar
from ruamel.yaml.resolver import VersionedResolver

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_11 = yaml.resolver.Resolver()
_YAML_12 = VersionedResolver(version=(1, 2))
_STR = "tag:yaml.org,2002:str"
_PLAIN = re.compile(r"[A-Za-z0-9_./+](?:[A-Za-z0-9_./@:+-]*[A-Za-z0-9_./@+-])?")
"""What may be written unquoted: no space, comment, flow or indicator character, no ':' at the end."""


def set_scalars(text: str, values: Mapping[str, str]) -> str | None:
    """`text` with the scalar at each dotted key replaced by its value, in that scalar's own style
    (plain, 'single' or "double"); None where a key is not a one-line scalar of its own."""
    bom = "\ufeff" if text.startswith("\ufeff") else ""  # libyaml's positions do not count it
    text = text.removeprefix(bom)
    try:
        root = yaml.compose(text, Loader=_Loader)
    except (yaml.YAMLError, RecursionError):
        return None
    splices: dict[int, tuple[int, str]] = {}
    for dotted, value in values.items():
        node = root
        key_end = 0
        for name in dotted.split("."):
            if not isinstance(node, yaml.MappingNode):
                return None
            found = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == name]
            if len(found) != 1:
                return None
            key, node = found[0]
            key_end = key.end_mark.index
        if not isinstance(node, yaml.ScalarNode) or not value.isprintable():
            return None
        start, end = node.start_mark.index, node.end_mark.index
        written = text[start:end]
        # An empty value has no characters to replace (`tag:` is null); an alias's node stands
        # where its anchor is (before this key); an anchored or tagged scalar starts with `&` or
        # `!`; one over several lines is not one line's edit.
        if not written or start < key_end or written[:1] in ("&", "!", "*") or "\n" in written:
            return None
        if node.style in ("|", ">"):
            return None
        if start in splices:
            return None  # two keys name one scalar
        splices[start] = (end, _styled(value, node.style))
    for start in sorted(splices, reverse=True):
        end, new = splices[start]
        text = text[:start] + new + text[end:]
    return bom + text


def _styled(value: str, style: str | None) -> str:
    if style == '"':
        return json.dumps(value, ensure_ascii=False)
    if style != "'" and _PLAIN.fullmatch(value) and _is_text(value):  # plain ('' from libyaml, None from PyYAML)
        return value
    return "'" + value.replace("'", "''") + "'"


def _is_text(plain: str) -> bool:
    """A YAML 1.1 reader (Helm) and a 1.2 one both read `plain`, unquoted, as a string."""
    yaml_11 = _YAML_11.resolve(yaml.ScalarNode, plain, (True, False))  # type: ignore[no-untyped-call]
    yaml_12 = _YAML_12.resolve(_RuamelScalar, plain, (True, False))
    return bool(yaml_11 == _STR and str(yaml_12) == _STR)
