"""The JSON API's OpenAPI 3.1 document, generated from the controller registry.

Every action is one `POST /api/v1/<controller>/<action>` with its input and payload schemas.
"""

from __future__ import annotations

from typing import Any

from sendworx import __version__
from sendworx.api.registry import Action, Controller, Input, InputKind, Registry
from sendworx.transports.jsonapi import HTTP_STATUS, PREFIX

_KIND_SCHEMAS: dict[InputKind, dict[str, Any]] = {
    InputKind.INTEGER: {"type": "integer"},
    InputKind.STRING: {"type": "string", "maxLength": 255},
    # smtp_routes: a list, a struct of strings, or one newline-separated string (a textarea)
    InputKind.STRING_STRUCT: {
        "anyOf": [
            {"type": "array", "items": {"type": "string"}},
            {"type": "object", "additionalProperties": {"type": "string"}},
            {"type": "string"},
        ]
    },
    InputKind.STRUCT: {"type": "object"},
}
_ERROR_DESCRIPTIONS = {
    11: "Validation failed: `payload` is InterWorx's message, `errors` the same per field.",
    401: "Authentication failed.",
    403: "The user lacks a permission the controller requires.",
    404: "No such controller or action.",
    1: "The request was valid but the action did not succeed.",
    207: "A cascade ran here but failed on some nodes: `payload` has each node's result.",
}


def operation_path(controller: Controller, action: Action) -> str:
    return f"{PREFIX}{controller.path}/{action.name}"


def openapi_document(registry: Registry) -> dict[str, Any]:
    paths = {
        operation_path(controller, action): {"post": _operation(controller, action)}
        for controller in registry.controllers
        for action in controller.actions.values()
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sendworx NodeWorx API",
            "version": __version__,
            "description": (
                "The same actions as XML-RPC `iworx.route` and SOAP `route`, one endpoint each. "
                "Integer inputs also accept numeric strings; unknown inputs are ignored."
            ),
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (armored on one line, or its base64 body) "
                    "or a session id from /nodeworx/index/getSession.",
                },
                "basic": {"type": "http", "scheme": "basic"},
            },
            "schemas": {"Failure": _FAILURE},
        },
        "security": [{"bearer": []}, {"basic": []}],
    }


def _operation(controller: Controller, action: Action) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "Success (status 0, reply_code 205).",
            "content": {"application/json": {"schema": _success(action)}},
        }
    }
    for status, description in _ERROR_DESCRIPTIONS.items():
        responses[str(HTTP_STATUS[status])] = _failure_response(description)
    responses["413"] = _failure_response("The request body is too large.")
    responses["500"] = _failure_response("A bug in sendworx; the panel log has the details.")
    return {
        "operationId": f"{controller.cli_name}.{action.name}",
        "summary": action.description,
        "tags": [controller.path],
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": _input_schema(action)}},
        },
        "responses": responses,
    }


def _input_schema(action: Action) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {spec.name: _input_property(spec) for spec in action.inputs},
        "additionalProperties": True,
    }
    required = [spec.name for spec in action.inputs if spec.required]
    if required:
        schema["required"] = required
    return schema


def _input_property(spec: Input) -> dict[str, Any]:
    schema = dict(spec.schema if spec.schema is not None else _KIND_SCHEMAS.get(spec.kind, {}))
    if spec.help:
        schema["description"] = spec.help
    return schema


def _success(action: Action) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "status": {"const": 0},
            "reply_code": {"const": 205},
            "payload": dict(action.returns) if action.returns is not None else {},
            "tokens": {
                "type": "object",
                "description": "Language tokens in the payload and their English text.",
                "additionalProperties": {"type": "string"},
            },
        },
        "required": ["status", "reply_code", "payload"],
    }


_FAILURE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"type": "integer"},
        "reply_code": {"type": "integer"},
        "payload": {"anyOf": [{"type": "string"}, {"type": "object"}]},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                "required": ["field", "message"],
            },
        },
    },
    "required": ["status", "reply_code", "payload"],
}


def _failure_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Failure"}}},
    }
