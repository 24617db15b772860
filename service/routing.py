"""`ApiRoute`: a Starlette `Route` for one method that also describes itself for OpenAPI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.routing import Route


@dataclass(frozen=True)
class Operation:
    """What OpenAPI says of one route: its body, query and responses (status -> model)."""

    summary: str
    tag: str
    responses: dict[int, type[BaseModel] | None]
    request: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    auth: bool = True
    errors: tuple[int, ...] = field(default=())


class ApiRoute(Route):
    def __init__(
        self, path: str, endpoint: Callable[..., Any], *, method: str, operation: Operation
    ) -> None:
        super().__init__(path, endpoint, methods=[method])
        self.method = method.lower()
        self.operation = operation
