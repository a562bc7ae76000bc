"""HL7 v2 handler fixtures: a registered sending hospital and its gateway."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from healthroam.bootstrap import Platform
from healthroam.exchange.hl7.contract import Handled

from hl7_helpers import HOSPITAL, Gateway, add_hospital, sample


@pytest.fixture
def gateway(platform: Platform) -> Gateway:
    add_hospital(platform, HOSPITAL, "海口市人民医院")
    return Gateway(platform)


@pytest.fixture
def send(gateway: Gateway) -> Callable[[str], Handled]:
    return lambda name: gateway.send(sample(name))
