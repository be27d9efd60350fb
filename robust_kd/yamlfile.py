"""Every YAML text robust-kd reads from a user, through one loader with limits.

``yaml.safe_load`` runs no code, but a hostile file can still take the program down: a 50 MB
recipe keeps the pure-Python parser busy for minutes, 20,000 nested brackets overflow the
composer's recursion, and an alias bomb (each list repeating the previous one nine times) is
cheap to load, yet the first ``str()`` or JSON dump of it never ends. So a file is refused when it is
larger than :data:`MAX_BYTES`, nests deeper than :data:`MAX_DEPTH`, or would hold more than
:data:`MAX_VALUES` values once its aliases are written out (an alias that contains itself never
ends). The shipped configs are below 1.1 KB, 3 levels deep and about 60 values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from .errors import UserError

MAX_BYTES = 256 * 1024      # 256 KiB: a few seconds for the pure-Python parser at worst
MAX_DEPTH = 50              # lists and mappings inside each other
MAX_VALUES = 100_000        # scalars, lists and mappings, counted with every alias written out


class YamlLimitError(UserError):
    """A YAML text beyond one of the limits above (the message says which)."""


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, with a bound on nesting checked as the composer descends."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise YamlLimitError(f"nests lists or mappings more than {MAX_DEPTH} levels deep (at line {line})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expansion(root: Node) -> None:
    """Count the values the document holds with every alias written out, without writing them out
    (each node is counted once and its total reused), and refuse a recursive alias."""
    totals: dict[int, int] = {}
    open_nodes: set[int] = set()        # nodes whose children are still being counted: their ancestors
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            totals[key] = 1 + sum(totals[id(child)] for child in _children(node))
            if totals[key] > MAX_VALUES:
                raise YamlLimitError(f"holds more than {MAX_VALUES:,} values (each alias *name counted as the values "
                                     "it repeats); robust-kd's settings need far fewer")
            continue
        if key in totals:
            continue
        if key in open_nodes:
            raise YamlLimitError(f"holds an alias that contains itself (line {node.start_mark.line + 1}), "
                                 "which never ends when written out; remove it")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))


def _load(text: str, lines: dict[tuple, int] | None = None) -> Any:
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        if lines is not None:
            _record_lines(node, (), lines)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _record_lines(node: Node, where: tuple, lines: dict[tuple, int]) -> None:
    """The line (1-based) of every key and list item, by its path of keys and indices from the top."""
    lines.setdefault(where, node.start_mark.line + 1)
    if isinstance(node, MappingNode):
        for key, value in node.value:
            path = (*where, str(key.value))
            lines[path] = key.start_mark.line + 1
            _record_lines(value, path, lines)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*where, index), lines)


def load_yaml_text(text: str, what: str, lines: dict[tuple, int] | None = None) -> Any:
    """Parse ``text`` (``what`` names it in messages, e.g. "override 'epochs=…'").

    Syntax errors stay ``yaml.YAMLError`` (a caller may fall back to the raw text); the limits and
    values that YAML cannot convert are a :class:`UserError`. ``lines``, when given, receives the line
    of every key and list item (see :func:`_record_lines`), for messages that name the line.
    """
    if len(text) > MAX_BYTES:
        raise YamlLimitError(f"{what} is longer than {MAX_BYTES:,} characters; give a shorter value")
    try:
        return _load(text, lines)
    except YamlLimitError as err:
        raise YamlLimitError(f"{what} {err}") from None
    except (ValueError, TypeError, OverflowError) as err:   # e.g. a date 2024-13-45, an integer of 5,000 digits
        raise UserError(f"{what} holds a value YAML cannot convert ({str(err).split(';')[0][:120]}); "
                        "quote it to keep it as text") from None


def read_yaml_file(path: str | Path, what: str = "config file", lines: dict[tuple, int] | None = None) -> Any:
    """The content of the YAML file ``path``, or a one-line UserError that names it as ``what``
    (e.g. "suite file") and says what is wrong: missing, unreadable, too large, not YAML, beyond a limit."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)         # a bounded read: /dev/zero or a 50 GB file end here too
    except FileNotFoundError:
        raise UserError(f"{what} '{path}' does not exist") from None
    except OSError as err:
        raise UserError(f"cannot read {what} '{path}' ({type(err).__name__}); give a YAML text file") from None
    if len(raw) > MAX_BYTES:
        raise YamlLimitError(f"{what} '{path}' is larger than {MAX_BYTES // 1024} KiB, the limit for a YAML "
                             "file (robust-kd's own are about 1 KiB); check that it is the right file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"cannot read {what} '{path}' (UnicodeDecodeError); give a YAML text file") from None
    try:
        return load_yaml_text(text, f"{what} '{path}'", lines)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UserError(f"{what} '{path}' is not valid YAML{where}; fix the syntax") from None
