"""Bind a FastAPI app's class-method routes to the one live instance of an ingress class.

``@swell.ingress(app)`` lets routes be declared on methods (``def root(self): ...``). FastAPI
would read ``self`` as a query parameter, so each such route is rebuilt with ``self`` supplied
by a dependency that returns the replica's instance.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any


def resolve_ingress_app(app_or_factory: Any) -> Any:
    """The ASGI app: ``@ingress`` takes an app or, as Ray does, a function that builds one.

    A function taking no arguments is a factory, called once in the replica (so the app is
    built where it serves and never pickled); an ASGI app takes (scope, receive, send).
    """
    if inspect.isfunction(app_or_factory):
        try:
            inspect.signature(app_or_factory).bind()
        except TypeError:
            return app_or_factory  # a plain ASGI function
        return app_or_factory()
    return app_or_factory


def _is_method_of(endpoint: Any, cls: type) -> bool:
    name = getattr(endpoint, "__name__", "")
    return any(vars(klass).get(name) is endpoint for klass in cls.__mro__)


def bind_routes_to_instance(app: Any, cls: type, instance: Any) -> None:
    """Rebuild every route of ``app`` whose endpoint is a method of ``cls``."""
    from fastapi import Depends
    from fastapi.routing import APIRoute, APIWebSocketRoute

    def current_instance() -> Any:
        return instance

    rebuilt: list[Any] = []
    for route in app.router.routes:
        if not isinstance(route, APIRoute | APIWebSocketRoute) or not _is_method_of(
            route.endpoint, cls
        ):
            rebuilt.append(route)
            continue
        endpoint = _with_self_dependency(route.endpoint, Depends(current_instance))
        if isinstance(route, APIWebSocketRoute):
            rebuilt.append(
                APIWebSocketRoute(
                    route.path, endpoint, name=route.name, dependencies=route.dependencies
                )
            )
            continue
        rebuilt.append(
            APIRoute(
                route.path,
                endpoint,
                response_model=route.response_model,
                status_code=route.status_code,
                tags=route.tags,
                dependencies=route.dependencies,
                summary=route.summary,
                description=route.description,
                response_description=route.response_description,
                responses=route.responses,
                deprecated=route.deprecated,
                methods=route.methods,
                operation_id=route.operation_id,
                response_model_include=route.response_model_include,
                response_model_exclude=route.response_model_exclude,
                response_model_by_alias=route.response_model_by_alias,
                response_model_exclude_unset=route.response_model_exclude_unset,
                response_model_exclude_defaults=route.response_model_exclude_defaults,
                response_model_exclude_none=route.response_model_exclude_none,
                include_in_schema=route.include_in_schema,
                response_class=route.response_class,
                name=route.name,
                callbacks=route.callbacks,
                openapi_extra=route.openapi_extra,
            )
        )
    app.router.routes[:] = rebuilt


def _with_self_dependency(endpoint: Any, dependency: Any) -> Any:
    signature = inspect.signature(endpoint)
    params = list(signature.parameters.values())
    if not params:
        return endpoint
    params[0] = params[0].replace(kind=inspect.Parameter.KEYWORD_ONLY, default=dependency)
    # Keyword-only parameters may follow; plain ones must precede them.
    rest = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        else p
        for p in params[1:]
    ]

    if inspect.iscoroutinefunction(endpoint):

        @functools.wraps(endpoint)
        async def async_view(**kwargs: Any) -> Any:
            return await endpoint(**kwargs)

        view: Any = async_view
    else:

        @functools.wraps(endpoint)
        def sync_view(**kwargs: Any) -> Any:
            return endpoint(**kwargs)

        view = sync_view
    view.__signature__ = signature.replace(parameters=[params[0], *rest])
    return view
