"""Small Ray Serve habits swell accepts: each checked without starting swell."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
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


def test_ray_schema_names_are_swells_models() -> None:
    from swell import schema
    from swell.config import ApplicationConfig, DeploymentOverride, ServeConfig
    from swell.serve_status import ServeStatus

    assert schema.ServeDeploySchema is ServeConfig
    assert schema.ServeApplicationSchema is ApplicationConfig
    assert schema.DeploymentSchema is DeploymentOverride
    assert schema.ServeStatus is ServeStatus
    assert schema.ApplicationStatus.RUNNING == "RUNNING"
    assert schema.ReplicaRank(1).local_rank == 0
    config = schema.ServeDeploySchema(
        logging_config={"encoding": "JSON"},
        applications=[{"import_path": "m:app", "logging_config": {"log_level": "debug"}}],
    )
    assert config.logging_config == schema.LoggingConfig(encoding="JSON")
    assert config.applications[0].logging_config is not None
    assert config.applications[0].logging_config.log_level == "DEBUG"


def test_status_has_rays_fields() -> None:
    from swell.serve_status import ServeStatus

    status = ServeStatus.from_dict(
        {
            "target_capacity": 50.0,
            "applications": {
                "a": {"status": "RUNNING", "last_deployed_time_s": 12.5, "deployments": {}}
            },
        }
    )
    assert status.target_capacity == 50.0
    assert status.applications["a"].last_deployed_time_s == 12.5


def test_bad_logging_config_names_the_field() -> None:
    import swell

    with pytest.raises(swell.ConfigError, match=r"logging_config\.log_level"):

        @swell.deployment(logging_config={"log_level": "LOUD"})
        def handler() -> None:
            pass


def test_rays_old_option_names_are_accepted_once() -> None:
    import swell

    dep = swell.deployment(
        autoscaling_config={"max_replicas": 3, "target_num_ongoing_requests_per_replica": 4},
        max_concurrent_queries=7,
    )(no_parameters)
    assert dep.config.autoscaling_config is not None
    assert dep.config.autoscaling_config.target_ongoing_requests == 4
    assert dep.config.max_ongoing_requests == 7
    with pytest.raises(ValueError, match="set target_ongoing_requests only"):
        swell.AutoscalingConfig(
            target_ongoing_requests=1, target_num_ongoing_requests_per_replica=2
        )


def test_handle_options_accept_by_reference() -> None:
    from swell.handle import DeploymentHandle

    handle = DeploymentHandle("Model", "default").options(_by_reference=False)
    assert handle.deployment_name == "Model"


def test_replica_context_has_rays_rank_world_size_and_unique_id() -> None:
    from swell._context import ReplicaContext
    from swell.schema import ReplicaRank

    context = ReplicaContext("app", "Model", "Model-1a2b3c4d", None, ReplicaRank(2, 0, 2), 3)
    assert context.replica_id == "Model-1a2b3c4d"
    assert context.replica_id.unique_id == "1a2b3c4d"  # type: ignore[attr-defined]
    assert (context.rank.rank, context.world_size) == (2, 3)


def test_ranks_are_the_lowest_free_ones() -> None:
    from swell._controller.deployment_state import DeploymentState
    from swell._controller.model import DeploymentRuntime

    runtime = DeploymentRuntime.__new__(DeploymentRuntime)
    runtime.ranks = {}
    runtime.state = DeploymentState("Model", 3, 10.0)
    for expected, replica_id in enumerate(("a", "b", "c")):
        assert runtime.next_rank(replica_id) == expected
        runtime.state.on_started(replica_id, 0.0)
    runtime.state.on_stopped("b")
    assert runtime.next_rank("d") == 1  # b's rank, freed
    runtime.state.on_started("d", 0.0)
    assert runtime.next_rank("e") == 3


def test_a_fastapi_app_pickles_by_value() -> None:
    import pickle
    import sys

    import cloudpickle
    from fastapi import FastAPI

    from swell._pickling import register_reducers

    app = FastAPI()
    app.state.model_name = "m"
    register_reducers()
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)  # as for an app defined in __main__
    try:
        payload = cloudpickle.dumps(app)
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    assert pickle.loads(payload).state.model_name == "m"


def test_ingress_factories_are_called_and_asgi_functions_kept() -> None:
    from swell._replica.fastapi_view import resolve_ingress_app

    sentinel = object()

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        pass

    assert resolve_ingress_app(lambda: sentinel) is sentinel
    assert resolve_ingress_app(asgi) is asgi
    assert resolve_ingress_app(sentinel) is sentinel
    assert resolve_ingress_app(None) is None


def test_cli_takes_rays_short_address_and_output_path() -> None:
    from swell.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["status", "-a", "http://10.0.0.1:8265"]).address == (
        "http://10.0.0.1:8265"
    )
    assert parser.parse_args(["build", "m:app", "--output-path", "c.yaml"]).output == "c.yaml"
