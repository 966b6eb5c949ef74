"""OpenAPI 3.0 description of the HTTP endpoints (served at /openapi.json, fuzzed by schemathesis)."""

from __future__ import annotations

from typing import Any

_JSON_HEADERS = {"Access-Control-Allow-Origin": {"schema": {"type": "string"}}}

SIGNAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["host"],
    "properties": {
        "host": {"type": "string", "nullable": True},
        "port": {"type": "integer"},
        "path": {"type": "string"},
        "secure": {"type": "boolean"},
        "key": {"type": "string"},
        "url": {"type": "string"},
    },
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}

TURN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["iceServers", "configured"],
    "properties": {
        "iceServers": {
            "type": "array",
            "nullable": True,
            "items": {
                "type": "object",
                "required": ["urls"],
                "properties": {
                    "urls": {"type": "array", "items": {"type": "string"}},
                    "username": {"type": "string", "description": "TURN REST: <unix expiry>:<opaque id>"},
                    "credential": {"type": "string", "description": "base64 HMAC-SHA1 of the username"},
                },
            },
        },
        "configured": {"type": "boolean"},
        "tier": {
            "type": "string",
            "enum": ["open", "free", "capped", "premium", "room"],
            "description": "open: ungated relay; premium: a licence; room: a room grant; "
                           "free: no (valid) credential, STUN only; capped: monthly allowance used",
        },
        "ttl": {"type": "integer", "description": "seconds the credentials stay valid"},
        "reason": {"type": "string", "description": "why a credential was not honoured (gated relay)"},
        "grant": {"type": "string", "description": "tier room: the grant renewed, for the next refresh"},
    },
}

GRANT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["grant", "exp"],
    "properties": {
        "grant": {"type": "string", "description": "b64url(JSON{room,sub,exp}).b64url(HMAC-SHA256)"},
        "exp": {"type": "integer", "description": "unix seconds; 600 s after minting"},
    },
}


JWKS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["keys"],
    "properties": {"keys": {"type": "array", "items": {
        "type": "object", "required": ["kty", "kid", "n", "e"],
        "properties": {"kty": {"type": "string", "enum": ["RSA"]}, "kid": {"type": "string"},
                       "n": {"type": "string"}, "e": {"type": "string"}, "alg": {"type": "string"},
                       "use": {"type": "string"}},
    }}},
}

START_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["ok", "ticket"],
    "properties": {"ok": {"type": "boolean"}, "ticket": {"type": "string", "pattern": "^[0-9a-f]{36}$"}},
}

VERIFY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["ok"],
    "properties": {
        "ok": {"type": "boolean"},
        "jwt": {"type": "string", "description": "RS256 identity token (aud kibitz-email)"},
        "reason": {"type": "string", "enum": ["expired", "locked", "mismatch", "bad ticket"]},
    },
}


def _errors(*pairs: tuple[int, str]) -> dict[str, Any]:
    return {str(code): {"description": desc, "headers": _JSON_HEADERS,
                        "content": {"application/json": {"schema": ERROR_SCHEMA}}} for code, desc in pairs}


def openapi_spec() -> dict[str, Any]:
    def json_ok(schema: dict[str, Any], desc: str) -> dict[str, Any]:
        return {
            "200": {
                "description": desc,
                "headers": _JSON_HEADERS,
                "content": {"application/json": {"schema": schema}},
            }
        }

    return {
        "openapi": "3.0.3",
        "info": {"title": "Kibitz server", "version": "1"},
        "paths": {
            "/api/signal": {
                "get": {
                    "summary": "The signaling broker to use (consistent per room across peers).",
                    "parameters": [
                        {"name": "room", "in": "query", "required": False,
                         "schema": {"type": "string", "maxLength": 512}},
                        {"name": "failed", "in": "query", "required": False,
                         "description": "a broker URL this client could not reach (several nodes: "
                                        "checked, and left out while it is down)",
                         "schema": {"type": "string", "maxLength": 128}},
                    ],
                    "responses": {
                        **json_ok(SIGNAL_SCHEMA, "broker coordinates, or host null"),
                        "400": {
                            "description": "bad room",
                            "content": {"application/json": {"schema": ERROR_SCHEMA}},
                        },
                    },
                }
            },
            "/api/turn": {
                "get": {
                    "summary": "ICE servers for this client (null until TURN is configured). With "
                               "--turn-gate licence: relay credentials for a licence or a room grant.",
                    "parameters": [
                        {"name": "room", "in": "query", "required": False,
                         "description": "the room the caller is in (a grant is honoured only there)",
                         "schema": {"type": "string"}},
                        {"name": "Authorization", "in": "header", "required": False,
                         "description": "Bearer <licence>", "schema": {"type": "string"}},
                        {"name": "X-Kibitz-Grant", "in": "header", "required": False,
                         "description": "a room grant from POST /api/room-grant",
                         "schema": {"type": "string"}},
                    ],
                    "responses": json_ok(TURN_SCHEMA, "ICE servers; a bad credential is a tier and reason"),
                }
            },
            "/api/room-grant": {
                "post": {
                    "summary": "Mint an \"opener pays\" grant for a room, authorised by a licence.",
                    "parameters": [
                        {"name": "Authorization", "in": "header", "required": False,
                         "description": "Bearer <licence>", "schema": {"type": "string"}},
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {
                            "type": "object", "required": ["room"],
                            "properties": {"room": {"type": "string", "pattern": "^[\\w.:-]{1,200}$"}},
                        }}},
                    },
                    "responses": {
                        **json_ok(GRANT_SCHEMA, "the grant and its expiry"),
                        **{
                            str(code): {"description": desc, "headers": _JSON_HEADERS,
                                        "content": {"application/json": {"schema": ERROR_SCHEMA}}}
                            for code, desc in [
                                (400, "the body is not {room} with a valid room"),
                                (401, "no Authorization: Bearer licence"),
                                (403, "the licence is unknown or revoked"),
                                (404, "this server's relay is not gated: no grants"),
                                (413, "the body is too large"),
                                (503, "the licence store cannot be read"),
                            ]
                        },
                    },
                }
            },
            "/api/email/start": {
                "post": {
                    "summary": "Mail a 6-digit sign-in code (kibitz serve --smtp); the ticket names it.",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["email", "room", "nonce"],
                        "properties": {"email": {"type": "string", "format": "email"},
                                       "room": {"type": "string", "minLength": 1, "maxLength": 200},
                                       "nonce": {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"}},
                    }}}},
                    "responses": {
                        **json_ok(START_SCHEMA, "the code is on its way"),
                        **_errors((400, "not {email, room, nonce}"), (404, "email sign-in is not configured"),
                                  (413, "the body is too large"),
                                  (429, "too many codes for this address and room, or this client"),
                                  (502, "the mail server refused the message")),
                    },
                }
            },
            "/api/email/verify": {
                "post": {
                    "summary": "Trade the code for an RS256 identity token bound to the start's nonce.",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["ticket", "code"],
                        "properties": {"ticket": {"type": "string"}, "code": {"type": "string"}},
                    }}}},
                    "responses": {
                        **json_ok(VERIFY_SCHEMA, "{ok, jwt} or {ok: false, reason}"),
                        **_errors((400, "not {ticket, code}"), (404, "email sign-in is not configured"),
                                  (413, "the body is too large")),
                    },
                }
            },
            "/api/email/jwks": {
                "get": {
                    "summary": "The keys that sign email identity tokens (old ones until they expire).",
                    "responses": {**json_ok(JWKS_SCHEMA, "JSON Web Key Set"),
                                  **_errors((404, "email sign-in is not configured"))},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness.",
                    "responses": json_ok(
                        {
                            "type": "object",
                            "required": ["ok"],
                            "properties": {
                                "ok": {"type": "boolean"}, "peers": {"type": "integer"},
                                "node": {"type": "string"}, "nodes": {"type": "integer"},
                            },
                        },
                        "alive",
                    ),
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus text exposition.",
                    "responses": {
                        "200": {
                            "description": "metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "responses": json_ok({"type": "object"}, "OpenAPI document"),
                }
            },
        },
    }
