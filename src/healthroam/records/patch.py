"""JSON Patch (RFC 6902) for the FHIR patch interaction (``application/json-patch+json``)."""

from __future__ import annotations

import copy
from typing import Any

from healthroam.errors import InvalidInput, Unprocessable


def _pointer(path: Any, index: int) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise InvalidInput(f"operation {index}: path must be a JSON pointer", expression="path")
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _parent(doc: Any, parts: list[str], index: int) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        node = _child(node, part, index)
    return node, parts[-1]


def _child(node: Any, part: str, index: int) -> Any:
    try:
        if isinstance(node, list):
            return node[int(part)]
        if isinstance(node, dict):
            return node[part]
    except (KeyError, IndexError, ValueError):
        pass
    raise Unprocessable(f"operation {index}: the path does not exist", expression="path")


def _get(doc: Any, parts: list[str], index: int) -> Any:
    node = doc
    for part in parts:
        node = _child(node, part, index)
    return node


def _remove(doc: Any, parts: list[str], index: int) -> Any:
    if not parts:
        raise Unprocessable(f"operation {index}: cannot remove the whole resource")
    parent, last = _parent(doc, parts, index)
    value = _child(parent, last, index)
    if isinstance(parent, list):
        del parent[int(last)]
    else:
        del parent[last]
    return value


def _add(doc: Any, parts: list[str], value: Any, index: int, replace: bool = False) -> Any:
    if not parts:
        return value
    parent, last = _parent(doc, parts, index)
    if isinstance(parent, list):
        if replace:
            _child(parent, last, index)
            parent[int(last)] = value
            return doc
        position = len(parent) if last == "-" else _list_index(last, len(parent), index)
        parent.insert(position, value)
    elif isinstance(parent, dict):
        if replace:
            _child(parent, last, index)
        parent[last] = value
    else:
        raise Unprocessable(f"operation {index}: the target is not a container", expression="path")
    return doc


def _list_index(text: str, size: int, index: int) -> int:
    if not text.isdigit() or int(text) > size:
        raise Unprocessable(f"operation {index}: bad array index", expression="path")
    return int(text)


def apply_patch(resource: dict[str, Any], operations: Any) -> dict[str, Any]:
    """The patched copy of ``resource``; ``test`` failures and bad paths raise 422."""
    if not isinstance(operations, list):
        raise InvalidInput("a JSON Patch is an array of operations", expression="$")
    doc: Any = copy.deepcopy(resource)
    for index, op in enumerate(operations):
        if not isinstance(op, dict) or "op" not in op:
            raise InvalidInput(f"operation {index} has no 'op'", expression=f"$[{index}]")
        kind = op["op"]
        parts = _pointer(op.get("path"), index)
        if kind in ("add", "replace", "test") and "value" not in op:
            raise InvalidInput(f"operation {index} needs a value", expression=f"$[{index}]")
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op["value"]), index)
        elif kind == "replace":
            doc = _add(doc, parts, copy.deepcopy(op["value"]), index, replace=True)
        elif kind == "remove":
            _remove(doc, parts, index)
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from"), index)
            value = _remove(doc, source, index) if kind == "move" else _get(doc, source, index)
            doc = _add(doc, parts, copy.deepcopy(value), index)
        elif kind == "test":
            if _get(doc, parts, index) != op["value"]:
                raise Unprocessable(f"operation {index}: test failed", expression="path")
        else:
            raise InvalidInput(f"operation {index}: unknown op", expression=f"$[{index}]")
    if not isinstance(doc, dict):
        raise Unprocessable("the patched document is not a resource")
    return doc
