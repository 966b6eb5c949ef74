"""Schemathesis against the OpenAPI description, on ``kibitz serve`` in a subprocess (loopback).

Every generated request must get a documented status, content type and body shape, and no 5xx.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from server_fixture import KibitzServer

from kibitz.server.openapi import openapi_spec

schema = schemathesis.openapi.from_dict(openapi_spec())


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_http_api_conforms(case: schemathesis.Case, kibitz_server: KibitzServer) -> None:
    case.call_and_validate(base_url=kibitz_server.http, timeout=5)
