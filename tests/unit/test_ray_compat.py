"""Small Ray Serve habits swell accepts: each checked without starting swell."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request

from swell._replica.user_callable import UserCallable
from swell.handle import DeploymentResponse, _resolve_arguments


def test_responses_inside_lists_tuples_and_dicts_are_resolved() -> None:
    async def value(v: Any) -> Any:
        return v

    async def main() -> tuple[tuple[Any, ...], dict[str, Any]]:
        loop = asyncio.get_running_loop()
        a = DeploymentResponse(task=loop.create_task(value(1)))
        b = DeploymentResponse(task=loop.create_task(value(2)))
        c = DeploymentResponse(task=loop.create_task(value(3)))
        return await _resolve_arguments(([a, (b, "x")], "plain"), {"named": {"c": c, "n": [4]}})

    args, kwargs = asyncio.run(main())
    assert args == ([1, (2, "x")], "plain")
    assert kwargs == {"named": {"c": 3, "n": [4]}}


def test_arguments_without_responses_are_passed_as_they_are() -> None:
    args: tuple[Any, ...] = ([1, 2], {"k": "v"})
    kwargs: dict[str, Any] = {"x": (3,)}
    resolved_args, resolved_kwargs = asyncio.run(_resolve_arguments(args, kwargs))
    assert resolved_args is args and resolved_kwargs is kwargs


def _request() -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": []})


class NoParameters:
    def __call__(self) -> str:
        return "no request needed"


class AsyncNoParameters:
    async def __call__(self) -> str:
        return "async, no request needed"


def no_parameters() -> str:
    return "function, no request needed"


def takes_request(request: Request) -> str:
    return request.url.path


def test_http_handlers_without_parameters_get_no_request() -> None:
    async def answer(target: Any, is_class: bool) -> Any:
        user = UserCallable(target, is_class)
        await user.construct((), {})
        try:
            return await user.call_http(_request())
        finally:
            await user.shutdown()

    assert asyncio.run(answer(NoParameters, True)) == "no request needed"
    assert asyncio.run(answer(AsyncNoParameters, True)) == "async, no request needed"
    assert asyncio.run(answer(no_parameters, False)) == "function, no request needed"
    assert asyncio.run(answer(takes_request, False)) == "/"
