"""`ApiRoute`: a Starlette `Route` for one method that also describes itself for OpenAPI;
`PageRoute`: a page for browsers (the portal, the API reference), outside that document."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.convertors import Convertor, register_url_convertor
from starlette.routing import Route


class IdConvertor(Convertor[str]):
    """`{name:id}`: a UUID as this service writes them. Anything else cannot name a
    resource, so the router answers 404 before a query is made."""

    regex = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

    def convert(self, value: str) -> str:
        return value.lower()

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("id", IdConvertor())


@dataclass(frozen=True)
class Operation:
    """What OpenAPI says of one route: its body, query and responses (status -> model)."""

    summary: str
    tag: str
    responses: dict[int, type[BaseModel] | None]
    request: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    path: type[BaseModel] | None = None  # the path parameters' schemas, when not plain ids
    auth: bool = True
    errors: tuple[int, ...] = field(default=())
    text_response: bool = False  # a `text/plain` body instead of JSON
    idempotent: bool = False  # takes an `Idempotency-Key` header (SPEC 14)


class ApiRoute(Route):
    def __init__(
        self, path: str, endpoint: Callable[..., Any], *, method: str, operation: Operation
    ) -> None:
        super().__init__(path, endpoint, methods=[method])
        self.method = method.lower()
        self.operation = operation


class PageRoute(Route):
    """A browser's page or form action: HTML, not an operation of the API's OpenAPI
    document, and not behind the API's bearer authentication."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, method: str = "GET") -> None:
        super().__init__(path, endpoint, methods=[method])
