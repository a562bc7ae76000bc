"""JSON form of normalised records (stored beside each source record for scoring)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from healthroam.registry.model import NormalizedRecord

_SETS = ("pinyin_keys", "address_tokens", "identifiers")


def to_json(record: NormalizedRecord) -> dict[str, Any]:
    data = asdict(record)
    for name in _SETS:
        data[name] = sorted(data[name])
    data["warnings"] = list(record.warnings)
    return data


def from_json(data: dict[str, Any]) -> NormalizedRecord:
    values = dict(data)
    for name in _SETS:
        values[name] = frozenset(values.get(name) or ())
    values["warnings"] = tuple(values.get("warnings") or ())
    return NormalizedRecord(**values)
