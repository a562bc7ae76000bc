"""`healthroam gateway --handler module:factory`: factories get the platform's services by name."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from healthroam.errors import InvalidInput
from healthroam.exchange.hl7.cli import load_handler


def by_services(records: Any, registry: Any, *, order_alerts: Any = None) -> Any:
    return ("services", records, registry, order_alerts)


def by_platform(platform: Any) -> Any:
    return ("platform", platform)


def needs_unknown(keys: Any) -> Any:
    return keys


def test_factories_get_services_or_the_platform_by_name() -> None:
    platform: Any = SimpleNamespace(records="R", registry="G")
    here = __name__
    made: Any = load_handler(f"{here}:by_services", platform)
    assert made == ("services", "R", "G", None)
    made = load_handler(f"{here}:by_platform", platform)
    assert made == ("platform", platform)
    with pytest.raises(InvalidInput, match="needs 'keys'"):
        load_handler(f"{here}:needs_unknown", platform)
    with pytest.raises(InvalidInput, match="cannot import"):
        load_handler("healthroam.no_such_module:build", platform)
    with pytest.raises(InvalidInput, match="module:factory"):
        load_handler("nocolon", platform)
