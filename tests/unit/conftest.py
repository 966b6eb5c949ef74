"""Fixtures for the unit tests that need a real PeerJS-protocol broker (npm ``peer`` and ours)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rtc_helpers import BROKERS, Broker


@pytest.fixture(scope="module", params=sorted(BROKERS))
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    b = BROKERS[request.param]()
    yield b
    b.stop()


@pytest.fixture
def broker_url(broker: Broker) -> str:
    return broker.url
