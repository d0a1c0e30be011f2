"""Option validation: defaults, and errors that name the field and the bad value."""

from __future__ import annotations

from typing import Any

import pytest

import swell
from swell import AutoscalingConfig, ConfigError, DeploymentConfig, HTTPOptions
from swell.config import RunOptions, validate_deployment_options, validate_model


def config_error(options: dict[str, Any]) -> str:
    """The message of the ConfigError that validating these deployment options raises."""
    with pytest.raises(ConfigError) as caught:
        validate_deployment_options(options, "options for deployment 'd'")
    return str(caught.value)


# Defaults --------------------------------------------------------------------------------


def test_deployment_defaults() -> None:
    config = validate_deployment_options({}, "options")
    assert config == DeploymentConfig()
    assert config.name is None
    assert config.num_replicas is None
    assert config.max_ongoing_requests == 5
    assert config.max_queued_requests == -1
    assert config.user_config is None
    assert config.health_check_period_s == 10.0
    assert config.health_check_timeout_s == 30.0
    assert config.graceful_shutdown_wait_loop_s == 2.0
    assert config.graceful_shutdown_timeout_s == 20.0
    assert config.ray_actor_options == {}
    assert config.autoscaling_config is None


def test_autoscaling_defaults() -> None:
    autoscaling = AutoscalingConfig()
    assert (autoscaling.min_replicas, autoscaling.max_replicas) == (1, 1)
    assert autoscaling.initial_replicas is None
    assert autoscaling.target_ongoing_requests == 2.0


def test_valid_options_are_kept() -> None:
    config = validate_deployment_options(
        {
            "name": "my-model_v1.2",
            "num_replicas": 3,
            "max_ongoing_requests": 16,
            "ray_actor_options": {"num_cpus": 2, "num_gpus": 0.5},
            "user_config": {"threshold": 0.3},
        },
        "options",
    )
    assert config.name == "my-model_v1.2"
    assert config.num_replicas == 3
    assert config.max_ongoing_requests == 16
    assert config.ray_actor_options == {"num_cpus": 2, "num_gpus": 0.5}
    assert config.user_config == {"threshold": 0.3}


# Invalid values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field", "shown_value"),
    [
        ({"max_ongoing_requests": 0}, "max_ongoing_requests", "0"),
        ({"max_ongoing_requests": -3}, "max_ongoing_requests", "-3"),
        ({"max_queued_requests": -2}, "max_queued_requests", "-2"),
        ({"num_replicas": -1}, "num_replicas", "-1"),
        ({"num_replicas": "many"}, "num_replicas", "'many'"),
        ({"health_check_period_s": 0}, "health_check_period_s", "0"),
        ({"health_check_timeout_s": -1.5}, "health_check_timeout_s", "-1.5"),
        ({"graceful_shutdown_timeout_s": -1}, "graceful_shutdown_timeout_s", "-1"),
        ({"name": "has space"}, "name", "'has space'"),
        ({"num_replica": 2}, "num_replica", "2"),
        ({"ray_actor_options": {"num_cpu": 1}}, "ray_actor_options", "num_cpu"),
    ],
)
def test_invalid_value_names_field_and_value(
    options: dict[str, Any], field: str, shown_value: str
) -> None:
    message = config_error(options)
    assert message.startswith("Invalid options for deployment 'd':")
    # One line per problem: "  <field>=<value given>: <what is allowed>".
    problems = [line.strip() for line in message.splitlines()[1:]]
    assert any(
        line.startswith(field) and shown_value in line.partition("=")[2] for line in problems
    ), message


def test_typo_is_reported_as_unknown_option() -> None:
    message = config_error({"num_replica": 2})
    assert "num_replica=2" in message
    assert "Extra inputs are not permitted" in message


def test_unknown_actor_option_lists_allowed_keys() -> None:
    message = config_error({"ray_actor_options": {"num_cpu": 1}})
    assert "['num_cpu']" in message
    assert "num_cpus" in message


def test_every_problem_is_reported() -> None:
    message = config_error({"max_ongoing_requests": 0, "health_check_period_s": 0})
    assert "max_ongoing_requests=0" in message
    assert "health_check_period_s=0" in message


def test_autoscaling_min_above_max() -> None:
    message = config_error({"autoscaling_config": {"min_replicas": 5, "max_replicas": 2}})
    assert "autoscaling_config" in message
    assert "min_replicas (5) must not exceed max_replicas (2)" in message


@pytest.mark.parametrize("initial", [0, 7])
def test_autoscaling_initial_outside_bounds(initial: int) -> None:
    message = config_error(
        {"autoscaling_config": {"min_replicas": 1, "max_replicas": 3, "initial_replicas": initial}}
    )
    assert f"initial_replicas ({initial}) must lie between" in message


def test_num_replicas_with_autoscaling_config() -> None:
    message = config_error({"num_replicas": 3, "autoscaling_config": {"max_replicas": 4}})
    assert "num_replicas" in message
    assert "autoscaling_config" in message
    assert "not both" in message


def test_auto_may_be_combined_with_autoscaling_config() -> None:
    config = validate_deployment_options(
        {"num_replicas": "auto", "autoscaling_config": {"min_replicas": 2, "max_replicas": 4}},
        "options",
    )
    assert config.num_replicas == "auto"


def test_assignment_is_validated_too() -> None:
    config = DeploymentConfig()
    with pytest.raises(ValueError, match="max_ongoing_requests"):
        config.max_ongoing_requests = 0


def test_non_string_keys_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Invalid options"):
        validate_deployment_options({1: 2}, "options")  # type: ignore[dict-item]


# Through the decorator and .options() ----------------------------------------------------


def test_decorator_validates_at_decoration_time() -> None:
    decorate = swell.deployment(max_ongoing_requests=0)
    with pytest.raises(ConfigError) as caught:

        @decorate
        class Model:
            pass

    assert "options for deployment 'Model'" in str(caught.value)
    assert "max_ongoing_requests=0" in str(caught.value)


def test_decorator_error_uses_the_given_name() -> None:
    with pytest.raises(ConfigError, match="deployment 'scorer'"):
        swell.deployment(name="scorer", num_replicas=-1)(lambda: None)


def test_options_validates() -> None:
    @swell.deployment(num_replicas=2)
    class Model:
        pass

    with pytest.raises(ConfigError) as caught:
        Model.options(health_check_period_s=0)
    assert "health_check_period_s=0" in str(caught.value)
    assert "deployment 'Model'" in str(caught.value)


def test_options_keeps_earlier_options() -> None:
    @swell.deployment(num_replicas=2, max_ongoing_requests=7, ray_actor_options={"num_cpus": 1})
    class Model:
        pass

    changed = Model.options(max_ongoing_requests=9)
    assert changed.config.num_replicas == 2
    assert changed.config.max_ongoing_requests == 9
    assert changed.config.ray_actor_options == {"num_cpus": 1}
    # The original is unchanged.
    assert Model.config.max_ongoing_requests == 7


def test_options_keeps_earlier_autoscaling_config() -> None:
    @swell.deployment(autoscaling_config={"min_replicas": 2, "max_replicas": 5})
    class Model:
        pass

    changed = Model.options(max_ongoing_requests=3)
    assert changed.config.autoscaling_config == AutoscalingConfig(min_replicas=2, max_replicas=5)


def test_options_cannot_add_num_replicas_to_autoscaling() -> None:
    @swell.deployment(autoscaling_config={"max_replicas": 5})
    class Model:
        pass

    with pytest.raises(ConfigError, match="not both"):
        Model.options(num_replicas=3)


# target_replicas() -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, 1),
        ({"num_replicas": None}, 1),
        ({"num_replicas": 0}, 0),
        ({"num_replicas": 4}, 4),
        ({"num_replicas": "auto"}, 1),
        ({"autoscaling_config": {"min_replicas": 2, "max_replicas": 6}}, 2),
        (
            {"autoscaling_config": {"min_replicas": 1, "max_replicas": 6, "initial_replicas": 4}},
            4,
        ),
        # min_replicas 0 starts at zero: the first request scales it up.
        ({"autoscaling_config": {"min_replicas": 0, "max_replicas": 6}}, 0),
        (
            {
                "num_replicas": "auto",
                "autoscaling_config": {"min_replicas": 3, "max_replicas": 6},
            },
            3,
        ),
    ],
)
def test_target_replicas(options: dict[str, Any], expected: int) -> None:
    assert validate_deployment_options(options, "options").target_replicas() == expected


def test_auto_means_one_to_a_hundred() -> None:
    autoscaling = DeploymentConfig(num_replicas="auto").effective_autoscaling()
    assert autoscaling is not None
    assert (autoscaling.min_replicas, autoscaling.max_replicas) == (1, 100)
    assert DeploymentConfig(num_replicas=2).effective_autoscaling() is None


# RunOptions and HTTPOptions --------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix", ["/", "/a", "/api/v2", "/a-b_c.d", "/v1:predict", "/~user/a+b=c", "/price$USD", None]
)
def test_route_prefix_valid(prefix: str | None) -> None:
    assert validate_model(RunOptions, {"route_prefix": prefix}, "run()").route_prefix == prefix


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [
        ("a", "must start with '/'"),
        ("", "must start with '/'"),
        ("/a/", "must not end with '/'"),
        ("/a b", "no spaces"),
        ('/a"b', "no spaces, quotes"),
        ("/a'b", "no spaces, quotes"),
        ("/a#b", "'#'"),
        ("/a%20b", "'%'"),
        ("/a{b}", "'{'"),
        ("/a;b", "';'"),
        ("/a\\b", "'\\'"),
        ("/a\nuse_backend x", "control characters"),
        ("/a\n", "control characters"),
        ("/a\tb", "control characters"),
        ("/a\x00", "control characters"),
        ("/é", "letters, digits"),
    ],
)
def test_route_prefix_invalid(prefix: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_model(RunOptions, {"route_prefix": prefix}, "run()")
    message = str(caught.value)
    assert message.startswith("Invalid run():")
    assert f"route_prefix={prefix!r}" in message
    assert reason in message


@pytest.mark.parametrize("name", ["app\n", "app\nbackend evil", "a b", "a/b", "a;b", "", "é"])
def test_names_are_matched_whole(name: str) -> None:
    # re.match with '$' accepted "app\n": names reach HAProxy's config and runtime commands.
    with pytest.raises(ConfigError, match="use letters, digits"):
        validate_model(RunOptions, {"name": name}, "run()")
    with pytest.raises(ConfigError, match="use letters, digits"):
        validate_deployment_options({"name": name}, "options")


def test_run_options_defaults_and_app_name() -> None:
    options = RunOptions()
    assert (options.name, options.route_prefix) == ("default", "/")
    with pytest.raises(ConfigError, match="name='my app'"):
        validate_model(RunOptions, {"name": "my app"}, "run()")


@pytest.mark.parametrize("port", [1, 8000, 65535])
def test_http_port_valid(port: int) -> None:
    assert validate_model(HTTPOptions, {"port": port}, "http_options").port == port


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_http_port_invalid(port: int) -> None:
    with pytest.raises(ConfigError, match=f"port={port}"):
        validate_model(HTTPOptions, {"port": port}, "http_options")


def test_http_defaults() -> None:
    options = HTTPOptions()
    assert (options.host, options.port) == ("127.0.0.1", 8000)
    assert options.request_timeout_s is None
    assert options.haproxy_binary is None


def test_http_ingress_hardening_defaults() -> None:
    options = HTTPOptions()
    assert options.request_header_timeout_s == 10.0
    assert options.client_timeout_s == 60.0
    assert options.max_request_body_bytes == 100 * 1024 * 1024
    assert not options.tls
    for name in ("request_header_timeout_s", "client_timeout_s", "max_request_body_bytes"):
        assert HTTPOptions.model_fields[name].description


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"ssl_certfile": "c.pem"}, "ssl_certfile and ssl_keyfile go together"),
        ({"ssl_keyfile": "k.pem"}, "ssl_certfile and ssl_keyfile go together"),
        ({"ssl_keyfile_password": "pw"}, "ssl_keyfile_password is set but ssl_keyfile is not"),
        ({"ssl_ca_certs": "ca.pem"}, "ssl_ca_certs (client certificates) needs HTTPS"),
        ({"max_request_body_bytes": 0}, "max_request_body_bytes=0"),
        ({"request_header_timeout_s": 0}, "request_header_timeout_s=0"),
    ],
)
def test_http_invalid_combinations(options: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_model(HTTPOptions, options, "http_options")
    assert expected in str(caught.value)


def test_tls_password_stays_out_of_dumps() -> None:
    options = validate_model(
        HTTPOptions,
        {"ssl_certfile": "c.pem", "ssl_keyfile": "k.pem", "ssl_keyfile_password": "hunter2"},
        "http_options",
    )
    assert options.tls
    assert "hunter2" not in str(options.model_dump(mode="json"))
    assert "hunter2" not in repr(options)


def test_http_unknown_option() -> None:
    with pytest.raises(ConfigError, match="prot=8001"):
        validate_model(HTTPOptions, {"prot": 8001}, "http_options")
