"""The service's OpenAPI document (`/docs.json`): BentoML's, with every answer stated as it is given.

BentoML 1.4 writes OpenAPI 3.0, but keeps only the first branch of a field's `anyOf`, so a field that may
be null is documented as never null; and it documents each API's errors as 400/404/500 bodies whose
`detail` is a string. Here each operation's request and answers are written from the models its handler
is typed with (null stated as OpenAPI 3.0 states it, `nullable`), every refusal as `ErrorResponse`.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from nextbest_serving.schemas import ErrorResponse

REF_TEMPLATE = "#/components/schemas/{model}"
# What each status of an API's refusals means; all but 500 are the service's own answers to bad requests.
API_ERRORS = {
    400: "the body is not a valid request: malformed JSON, or a field missing, unknown or of the wrong type",
    401: "NEXTBEST_API_KEY is set and the request does not carry it as a Bearer token",
    413: "the body, a history or a batch is larger than the service's limit",
    404: "the service keeps no customer store (the store's routes), or the customer has nothing stored",
    422: "a valid request whose content cannot be used (an unparsable time, an unknown candidate)",
    500: "a fault of the service (never a request's)",
    503: "the customer store cannot be reached: nothing was done; send the request again later",
}
# The routes outside BentoML's APIs: /metadata, and the store's routes for one customer.
GET_ERRORS = {401: API_ERRORS[401]}
CUSTOMER_ERRORS = {status: API_ERRORS[status] for status in (401, 404, 503)}


class OpenApi30Schema(GenerateJsonSchema):
    """JSON schemas as OpenAPI 3.0 writes them: a value that may be null is `nullable`, not a union
    with a `null` type (which 3.0 does not have)."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        inner = self.generate_inner(schema["schema"])
        if "$ref" in inner:  # a reference's siblings are ignored in 3.0
            return {"allOf": [inner], "nullable": True}
        return {**inner, "nullable": True}


def document(
    spec: dict[str, Any],
    handlers: Mapping[str, Callable[..., Any]],
    routes: Mapping[str, Mapping[str, type[BaseModel]]],
) -> dict[str, Any]:
    """`spec` (BentoML's document, as a dict) with the operations rewritten.

    Args:
        handlers: per route, the POST handler: its one positional argument's type is the request, its
            return type the answer.
        routes: per route outside BentoML's APIs, the answer of each method (a `{name}` in the route is
            a text path parameter).
    """
    components: dict[str, Any] = spec.setdefault("components", {}).setdefault("schemas", {})

    def schema_of(model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template=REF_TEMPLATE, schema_generator=OpenApi30Schema)
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
        return {"$ref": REF_TEMPLATE.format(model=model.__name__)}

    def answers(model: type[BaseModel], errors: Mapping[int, str]) -> dict[str, Any]:
        error = schema_of(ErrorResponse)
        return {
            "200": {"description": "Successful Response", "content": _json(schema_of(model))},
            **{str(status): {"description": why, "content": _json(error)} for status, why in errors.items()},
        }

    for route, handler in handlers.items():
        request, answer = _request_and_answer(handler)
        operation = spec["paths"][route]["post"]
        operation["requestBody"] = {"required": True, "content": _json(schema_of(request))}
        operation["responses"] = answers(answer, API_ERRORS)
    for route, methods in routes.items():
        names = re.findall(r"{(\w+)}", route)
        parameters = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
        ]
        errors = CUSTOMER_ERRORS if names else GET_ERRORS  # the routes with a parameter name a customer
        spec["paths"][route] = {
            method: {
                "tags": ["Service APIs"],
                **({"parameters": parameters} if parameters else {}),
                "responses": answers(answer, errors),
            }
            for method, answer in methods.items()
        }
    spec["components"]["schemas"] = _referenced(spec["paths"], components)
    return spec


def _referenced(paths: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """The `components` that `paths` use, directly or through other components: BentoML's own versions
    of the operations' schemas are left out with the operations that no longer use them."""
    used: dict[str, Any] = {}
    pending = [paths]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(REF_TEMPLATE.format(model="")):
                name = ref.rsplit("/", 1)[1]
                if name not in used:
                    used[name] = components[name]
                    pending.append(components[name])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return dict(sorted(used.items()))


def _request_and_answer(handler: Callable[..., Any]) -> tuple[type[BaseModel], type[BaseModel]]:
    hints = typing.get_type_hints(handler)
    answer = hints.pop("return")
    (request,) = hints.values()
    return request, answer


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}
