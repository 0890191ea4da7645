"""Reading the config's YAML into plain data, with the line of every key, without YAML 1.1's traps.

PyYAML's YAML 1.1 resolver turns `no` into False, `010` into 8 and `12:30` into 750, and lets a
duplicate key silently win. So this module composes the YAML into nodes and builds plain data
itself:
  - every scalar stays the text the user typed (the schema's types decide what it means);
  - only `null`, `~` and an empty value are null; `<<` merge keys work; other tags are refused;
  - a duplicate key is an error naming both lines;
  - `${VAR}` references in scalar values (not keys) are substituted (see `env`);
  - an empty file is an error ("config file is empty"): most likely the wrong file. `{}` asks for
    every default; aliases that expand beyond `MAX_VALUES` values, or nest deeper than
    `MAX_DEPTH`, are refused.
The result is a `Document`: the data, where each key was written, which values came from which
variables (and how they were typed, `${VAR}` and all), and the problems found so far. This
module does not validate the data against the schema or word schema problems: see `schema` and
`report`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from monitor.config.env import substitute
from monitor.config.schema import KeyPath, nearest_line

# ---- reading YAML --------------------------------------------------------------------------------

_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool")}
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
MAX_VALUES = 100_000  # aliases can multiply a small file (billion laughs); no config is this big
MAX_DEPTH = 50


class _Composer(yaml.SafeLoader):
    """Composes nodes and resolves only null and `<<`: every other scalar stays a string, and the
    schema decides its type. This keeps `no`, `on`, `010` and `12:30` as the user typed them."""

    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012 - PyYAML's own class attribute


_Composer.add_implicit_resolver(
    _NULL_TAG, re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_Composer.add_implicit_resolver(_MERGE_TAG, re.compile(r"^<<$"), ["<"])

if hasattr(yaml, "CSafeLoader"):

    class _FastComposer(yaml.CSafeLoader):
        """The same resolution on LibYAML's parser: 10× faster on 10,000 watchlists. Invalid YAML
        is read again with `_Composer`, whose messages say more."""

        yaml_implicit_resolvers = _Composer.yaml_implicit_resolvers

    _FAST_COMPOSER: Any = _FastComposer
else:  # pragma: no cover - PyYAML built without LibYAML
    _FAST_COMPOSER = _Composer


def _compose(text: str) -> yaml.Node | None:
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=_FAST_COMPOSER)
    except yaml.YAMLError:
        node = yaml.compose(text, Loader=_Composer)  # raises with the better message
    return node


@dataclass(frozen=True)
class Problem:
    path: KeyPath
    message: str
    line: int | None = None  # None: the line of `path` (or its nearest written parent)


@dataclass
class Document:
    """Plain data built from the YAML, and where each key was written."""

    data: object = None
    lines: dict[KeyPath, int] = field(default_factory=dict)
    env_names: dict[KeyPath, tuple[str, ...]] = field(default_factory=dict)
    written: dict[KeyPath, str] = field(default_factory=dict)  # values with ${VAR}, as typed
    unresolved: set[KeyPath] = field(default_factory=set)  # values already reported as broken
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, path: KeyPath) -> int | None:
        return nearest_line(self.lines, path)


class _Builder:
    def __init__(self, env: Mapping[str, str], doc: Document) -> None:
        self.env = env
        self.doc = doc
        self.values = 0

    def build(self, node: yaml.Node, path: KeyPath, active: frozenset[int]) -> object:
        self.values += 1
        if self.values > MAX_VALUES:
            raise _TooLarge
        if len(path) > MAX_DEPTH or id(node) in active:
            what = "nested too deeply" if len(path) > MAX_DEPTH else "a recursive alias"
            self.fail(path, f"{what}; not supported here", node)
            return None
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
            return self.mapping(node, path, active | {id(node)})
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
            return [
                self.item(child, (*path, index), active | {id(node)})
                for index, child in enumerate(node.value)
            ]
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG:
            return None
        if isinstance(node, yaml.ScalarNode) and node.tag in _PLAIN_TAGS:
            return self.interpolate(node.value, path, node)
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        self.fail(path, f"the YAML tag {tag} is not supported here", node)
        return None

    def item(self, node: yaml.Node, path: KeyPath, active: frozenset[int]) -> object:
        self.doc.lines[path] = node.start_mark.line + 1
        return self.build(node, path, active)

    def mapping(self, node: yaml.MappingNode, path: KeyPath, active: frozenset[int]) -> object:
        result: dict[str, object] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for source in self.merge_sources(value_node, path):
                    merged = self.build(source, path, active)
                    if isinstance(merged, dict):
                        result = merged | result  # the first source wins, as the YAML spec says
        first_line: dict[str, int] = {}
        explicit: dict[str, object] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.fail(path, "a key must be a plain name, not a list or mapping", key_node)
                continue
            key = str(key_node.value)
            key_path = (*path, key)
            if key in first_line:
                self.doc.problems.append(
                    Problem(
                        key_path,
                        f"duplicate key {key!r}: first at line {first_line[key]}, "
                        f"again at line {line}",
                        line,
                    )
                )
                continue
            first_line[key] = line
            self.doc.lines[key_path] = line
            explicit[key] = self.build(value_node, key_path, active)
        return result | explicit

    def merge_sources(self, node: yaml.Node, path: KeyPath) -> list[yaml.Node]:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if all(isinstance(source, yaml.MappingNode) for source in sources):
            return list(sources)
        self.fail(path, "<< must be followed by a mapping or a list of mappings", node)
        return []

    def interpolate(self, text: str, path: KeyPath, node: yaml.Node) -> str:
        if "$" not in text:
            return text
        result = substitute(text, self.env)
        if result.names:
            self.doc.env_names[path] = result.names
            self.doc.written[path] = text
        for message in result.errors:
            self.fail(path, message, node)
        return result.text

    def fail(self, path: KeyPath, message: str, node: yaml.Node) -> None:
        self.doc.problems.append(Problem(path, message, node.start_mark.line + 1))
        self.doc.unresolved.add(path)


class _TooLarge(Exception):
    pass


def read_yaml(text: str, env: Mapping[str, str]) -> Document:
    doc = Document()
    try:
        root = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "cannot be read"
        if exc.context and exc.problem and exc.context.startswith("while"):
            at = f" at line {exc.context_mark.line + 1}" if exc.context_mark else ""
            message += f" ({exc.context}{at})"
        elif exc.context and exc.problem:
            message = f"{exc.context}, {exc.problem}"
        if "'\\t'" in message:
            message += "; YAML does not allow tabs for indentation"
        doc.problems.append(
            Problem((), f"invalid YAML: {message}", mark.line + 1 if mark else None)
        )
        return doc
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        code = ord(exc.character) if isinstance(exc.character, str) else exc.character
        doc.problems.append(Problem((), f"invalid YAML: {exc.reason} (#x{code:04x})", line))
        return doc
    except RecursionError:
        doc.problems.append(Problem((), "invalid YAML: nested too deeply"))
        return doc
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == _NULL_TAG):
        doc.problems.append(Problem((), "config file is empty (write {} to use every default)"))
        return doc
    if not isinstance(root, yaml.MappingNode):
        doc.problems.append(
            Problem((), "the file must be a mapping of sections such as feeds: and watchlists:", 1)
        )
        return doc
    try:
        doc.data = _Builder(env, doc).build(root, (), frozenset())
    except _TooLarge:
        doc.problems.append(
            Problem((), f"the file expands to more than {MAX_VALUES} values (aliases?)")
        )
    return doc
