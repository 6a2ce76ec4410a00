"""Bounded YAML for config files: the line of every key, no duplicate keys, no nesting or alias bombs.

PyYAML composes recursively and every walk of the result expands aliases again, so a broken or hostile
file could exhaust the stack, the CPU or the memory. Here the composer counts nesting depth, aliases and
the nodes the aliases expand to while it reads, and refuses past small bounds before that work is done.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_DEPTH = 64  # nesting levels of mappings/lists, aliases expanded; a gateway config needs about 5
MAX_ALIASES = 100  # alias uses (*name) in one file
MAX_NODES = 50_000  # nodes once aliases are expanded; a 200-door config has a few thousand

Loc = tuple[Any, ...]
Problem = tuple[int | None, Loc, str]  # line, key path, message
Lines = dict[Loc, int]

_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_VALUE = "tag:yaml.org,2002:value"


class YamlProblem(Exception):
    """What is wrong with the YAML itself: a syntax error, a limit crossed, duplicate keys."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(msg for _, _, msg in problems))


def _at(mark: Any) -> int | None:
    return mark.line + 1 if mark is not None else None


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses depth, alias and expansion past the bounds, naming the line."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._path: list[Any] = []  # key path of the node being composed, for messages
        self._depth = 0  # collections enclosing the node being composed
        self._deepest = 0  # deepest level reached in the collection being composed
        self._nodes = 0  # nodes the document expands to so far
        self._aliases = 0
        self._size: dict[int, int] = {}  # id(anchored node) -> expanded nodes, once composed
        self._height: dict[int, int] = {}  # id(anchored node) -> nesting levels, once composed

    def _refuse(self, event: yaml.Event, msg: str) -> YamlProblem:
        return YamlProblem([(_at(event.start_mark), tuple(self._path), msg)])

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if parent is not None:  # index: a mapping value's key node, a list item's number, None for a key
            step = index.value if isinstance(index, yaml.ScalarNode) else index
            self._path.append("?" if step is None else step)
        try:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent):
                self._alias(event)
                return super().compose_node(parent, index)
            return self._compose(event, parent, index)
        finally:
            if parent is not None:
                self._path.pop()

    def _alias(self, event: yaml.AliasEvent) -> None:
        self._aliases += 1
        if self._aliases > MAX_ALIASES:
            raise self._refuse(event, f"more than {MAX_ALIASES} aliases (*{event.anchor}): write it out")
        target = self.anchors.get(event.anchor)
        if target is None:
            return  # PyYAML's own "found undefined alias"
        if id(target) not in self._size:
            raise self._refuse(event, f"alias *{event.anchor} is inside the node it names (a cycle)")
        if self._depth + self._height[id(target)] > MAX_DEPTH:
            raise self._refuse(event, f"alias *{event.anchor} nests deeper than {MAX_DEPTH} levels")
        self._deepest = max(self._deepest, self._depth + self._height[id(target)])
        self._count(event, self._size[id(target)], f"alias *{event.anchor} expands")

    def _count(self, event: yaml.Event, n: int, what: str) -> None:
        self._nodes += n
        if self._nodes > MAX_NODES:
            raise self._refuse(event, f"{what} the document past {MAX_NODES} nodes; a config is far smaller")

    def _compose(self, event: yaml.Event, parent: yaml.Node | None, index: Any) -> yaml.Node:
        start, outer = self._nodes, self._deepest
        self._count(event, 1, "this node takes")
        collection = isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent))
        if collection:
            if self._depth >= MAX_DEPTH:
                raise self._refuse(event, f"nested deeper than {MAX_DEPTH} levels")
            self._depth += 1
            self._deepest = self._depth
        try:
            node = super().compose_node(parent, index)
        finally:
            if collection:
                self._depth -= 1
        if event.anchor is not None:
            self._size[id(node)] = self._nodes - start
            self._height[id(node)] = self._deepest - self._depth if collection else 0
        self._deepest = max(outer, self._deepest)
        return node


class _Builder:
    """Python values from composed nodes, recording the line of every key path, collecting duplicates."""

    def __init__(self, loader: _BoundedLoader) -> None:
        self.loader = loader
        self.lines: Lines = {}
        self.duplicates: list[Problem] = []
        self._reported: set[int] = set()  # key nodes already reported (an anchor is built once per use)

    def value(self, node: yaml.Node, path: Loc) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        expected = _MAP if isinstance(node, yaml.MappingNode) else _SEQ
        if node.tag != expected:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise YamlProblem([(_at(node.start_mark), path, f"YAML tag {tag} is not supported in a config")])
        if isinstance(node, yaml.SequenceNode):
            out = []
            for i, item in enumerate(node.value):
                self.lines[(*path, i)] = item.start_mark.line + 1
                out.append(self.value(item, (*path, i)))
            return out
        return self.mapping(node, path)

    def scalar(self, node: yaml.ScalarNode, path: Loc) -> Any:
        """int, bool, date...: the safe constructor's rules. Its own errors are not YAMLErrors: a
        2026-13-45 "date", an int of more than 4300 digits, a `!!set` where a scalar is, a lone surrogate."""
        try:
            value = self.loader.construct_object(node)
            hash(value)  # a key must be hashable; a plain scalar always is
            if isinstance(value, str) and not value.isascii():
                value.encode("utf-8")  # a "\ud800" escape: no path, row or log line can hold it
        except (ValueError, OverflowError, TypeError) as exc:
            msg = f"cannot read this value: {str(exc)[:80]}"
            raise YamlProblem([(_at(node.start_mark), path, msg)]) from None
        return value

    def mapping(self, node: yaml.MappingNode, path: Loc) -> dict[Any, Any]:
        own: dict[Any, Any] = {}
        first: dict[Any, int] = {}
        merged: dict[Any, Any] = {}
        merge_line = 0
        for k, v in node.value:
            line = k.start_mark.line + 1
            if not isinstance(k, yaml.ScalarNode):
                raise YamlProblem([(line, path, "a key must be a plain value, not a list or mapping")])
            key = "<<" if k.tag == _MERGE else "=" if k.tag == _VALUE else self.scalar(k, path)
            if key in first:
                if id(k) not in self._reported:
                    self._reported.add(id(k))
                    msg = f"duplicate key {key!r} (first at line {first[key]})"
                    self.duplicates.append((line, (*path, key), msg))
                continue
            first[key] = line
            if k.tag == _MERGE:
                merge_line = line
                self._merge(v, path, merged)
            else:
                self.lines[(*path, key)] = line
                own[key] = self.value(v, (*path, key))
        for key in merged.keys() - own.keys():
            self.lines[(*path, key)] = merge_line  # a merged key is reported where `<<` brings it in
        return {**{k: v for k, v in merged.items() if k not in own}, **own}

    def _merge(self, node: yaml.Node, path: Loc, into: dict[Any, Any]) -> None:
        """YAML merge key: `<<: *base` or `<<: [*a, *b]`; keys written here win, then earlier sources."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for src in sources:
            if not isinstance(src, yaml.MappingNode):
                msg = "<< (merge) takes a mapping or a list of mappings"
                raise YamlProblem([(_at(src.start_mark), (*path, "<<"), msg)])
            saved, self.lines = self.lines, {}  # a source's own lines belong to where it is written
            try:
                for key, val in self.mapping(src, path).items():
                    into.setdefault(key, val)
            finally:
                self.lines = saved


def _yaml_error(exc: yaml.YAMLError, text: str) -> Problem:
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        return line, (), f"YAML: unacceptable character #x{exc.character:04x} ({exc.reason})"
    if isinstance(exc, yaml.MarkedYAMLError):
        msg = exc.problem or ""
        if exc.context:
            where = f" (line {_at(exc.context_mark)})" if exc.context_mark is not None else ""
            msg = f"{exc.context}{where}: {msg}"
        return _at(exc.problem_mark), (), f"YAML syntax: {msg}"
    return None, (), f"YAML: {exc}"


def load_yaml(text: str) -> tuple[Any, Lines]:
    """(data, line of each key path) for one YAML document, or YamlProblem; never a traceback."""
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # the reader checks every character here
        node = loader.get_single_node()
        if node is None:
            return None, {}
        builder = _Builder(loader)
        data = builder.value(node, ())
        if builder.duplicates:
            raise YamlProblem(builder.duplicates)
        return data, builder.lines
    except yaml.YAMLError as exc:
        raise YamlProblem([_yaml_error(exc, text)]) from None
    except RecursionError:  # last resort: the bounds above should make this unreachable
        raise YamlProblem([(None, (), f"nested too deeply to read (limit {MAX_DEPTH} levels)")]) from None
    finally:
        if loader is not None:
            loader.dispose()
