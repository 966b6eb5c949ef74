"""Schemathesis against the OpenAPI description, on ``kibitz serve`` in a subprocess (loopback):
the plain server, and one whose relay is behind ``--turn-gate licence`` (random Authorization and
X-Kibitz-Grant headers, room-grant bodies).

Every generated request must get a documented status, content type and body shape, and no 5xx.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from server_fixture import KibitzServer, running_kibitz_server

from kibitz.server.openapi import openapi_spec

schema = schemathesis.openapi.from_dict(openapi_spec())


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_http_api_conforms(case: schemathesis.Case, kibitz_server: KibitzServer) -> None:
    case.call_and_validate(base_url=kibitz_server.http, timeout=5)


@pytest.fixture(scope="module")
def gated_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KibitzServer]:
    where = tmp_path_factory.mktemp("gated")
    (where / "turn.secret").write_text(secrets.token_hex(24))
    with running_kibitz_server(
        "--turn-url", "turn:127.0.0.1:3478", "--turn-secret-file", str(where / "turn.secret"),
        "--turn-gate", "licence", "--stun-url", "stun:127.0.0.1:3478", "--state-dir", str(where / "state"),
    ) as srv:
        yield srv


gated_schema = schemathesis.openapi.from_dict(openapi_spec()).include(path_regex="^/api/(turn|room-grant)")


@gated_schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_gated_relay_conforms(case: schemathesis.Case, gated_server: KibitzServer) -> None:
    case.call_and_validate(base_url=gated_server.http, timeout=5)

