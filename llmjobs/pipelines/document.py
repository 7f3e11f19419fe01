"""A YAML document loaded as plain values, with the file position of every key and value.

PyYAML's composer keeps a mark (line and column) on each node; `load_document` walks the
node tree once, builds dicts, lists and scalars with the safe constructor's rules, and
records each node's position under its key path, such as ("pipelines", "nightly", "steps", 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Position:
    """A 1-based line and column in a file."""

    line: int
    column: int


@dataclass(frozen=True)
class Problem:
    """One invalid entry of a pipeline file: where it is and what is wrong with it."""

    path: Path
    key_path: KeyPath
    message: str
    position: Position | None = None

    @property
    def location(self) -> str:
        where = str(self.path)
        if self.position is not None:
            where += f":{self.position.line}:{self.position.column}"
        return where

    @property
    def dotted_key(self) -> str:
        return format_key_path(self.key_path)

    def describe(self) -> str:
        if self.key_path:
            return f"{self.location}: {self.dotted_key}: {self.message}"
        return f"{self.location}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "line": self.position.line if self.position else None,
            "column": self.position.column if self.position else None,
            "key": self.dotted_key,
            "message": self.message,
        }


def format_key_path(key_path: Sequence[str | int]) -> str:
    """Spell a key path the way a reader finds it: pipelines.nightly.steps[1].filter."""
    text = ""
    for key in key_path:
        if isinstance(key, int):
            text += f"[{key}]"
        else:
            text += f".{key}" if text else str(key)
    return text


@dataclass
class Document:
    """The values of a YAML file and the position of each key path in it."""

    path: Path
    data: Any
    positions: dict[KeyPath, Position] = field(default_factory=dict)

    def position(self, key_path: KeyPath) -> Position | None:
        """Return the position of key_path, else of its nearest parent that has one."""
        for end in range(len(key_path), -1, -1):
            found = self.positions.get(tuple(key_path[:end]))
            if found is not None:
                return found
        return None

    def problem(self, key_path: KeyPath, message: str) -> Problem:
        return Problem(self.path, tuple(key_path), message, self.position(key_path))


class DocumentError(Exception):
    """Raised when a file is not valid YAML; carries the problem with its position."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.describe())
        self.problem = problem


def load_document(path: Path, text: str | None = None) -> Document:
    """Parse a YAML file (or text given for it) into a Document; raise DocumentError if invalid."""
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DocumentError(Problem(path, (), "file not found")) from None
        except (OSError, UnicodeDecodeError) as error:
            raise DocumentError(Problem(path, (), f"cannot be read: {error}")) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        position = Position(mark.line + 1, mark.column + 1) if mark else None
        message = f"invalid YAML: {error.problem or error.context}"
        raise DocumentError(Problem(path, (), message, position)) from None
    except yaml.YAMLError as error:
        raise DocumentError(Problem(path, (), f"invalid YAML: {error}")) from None
    document = Document(path, None)
    if root is not None:
        document.data = _Converter(document).convert(root, ())
    return document


class _Converter:
    def __init__(self, document: Document) -> None:
        self.document = document
        # The safe constructor applies YAML 1.1's implicit types (bool, int, float, null, dates).
        self.constructor = yaml.constructor.SafeConstructor()

    def convert(self, node: yaml.Node, key_path: KeyPath) -> Any:
        self.document.positions[key_path] = _position(node)
        if isinstance(node, yaml.MappingNode):
            values: dict[str, Any] = {}
            for key_node, value_node in node.value:
                name = self.key(key_node, key_path)
                if name in values:
                    problem = Problem(self.document.path, (*key_path, name), "duplicate key",
                                      _position(key_node))
                    raise DocumentError(problem)
                values[name] = self.convert(value_node, (*key_path, name))
            return values
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*key_path, index)) for index, item in enumerate(node.value)]
        return self.constructor.construct_object(node, deep=True)

    def key(self, node: yaml.Node, key_path: KeyPath) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise DocumentError(Problem(self.document.path, key_path, "a mapping key must be a scalar",
                                        _position(node)))
        key = self.constructor.construct_object(node, deep=True)
        if key is None:
            raise DocumentError(Problem(self.document.path, key_path, "a mapping key is empty",
                                        _position(node)))
        return str(key)


def _position(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)
