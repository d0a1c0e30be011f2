"""Handles: timeout_s has a default, is validated and survives pickling; result() waits."""

from __future__ import annotations

import concurrent.futures
import math
import pickle

import pytest

from swell import ConfigError, DeploymentHandle, DeploymentResponse, RequestTimeoutError
from swell.handle import DEFAULT_TIMEOUT_S


def test_every_handle_has_a_deadline_by_default() -> None:
    handle = DeploymentHandle("Model", "default")
    assert handle.timeout_s == DEFAULT_TIMEOUT_S == 300.0
    assert handle.predict.timeout_s == DEFAULT_TIMEOUT_S


def test_timeout_s_is_kept_by_further_options_and_by_pickling() -> None:
    handle = DeploymentHandle("Model", "default").options(timeout_s=2.5)
    streaming = handle.options(stream=True).tokens
    assert (streaming.timeout_s, streaming.stream, streaming.method_name) == (2.5, True, "tokens")
    rebuilt = pickle.loads(pickle.dumps(streaming))
    assert (rebuilt.timeout_s, rebuilt.stream, rebuilt.method_name) == (2.5, True, "tokens")
    assert "timeout_s=2.5" in repr(rebuilt)


@pytest.mark.parametrize("value", [0, -1, math.inf, math.nan, True, "30"])
def test_a_timeout_that_is_no_deadline_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="timeout_s must be a positive, finite number"):
        DeploymentHandle("Model", "default").options(timeout_s=value)  # type: ignore[arg-type]


def test_result_timeout_bounds_only_the_wait() -> None:
    pending: concurrent.futures.Future[int] = concurrent.futures.Future()
    with pytest.raises(RequestTimeoutError, match=r"no result within result\(timeout_s=0.01\)"):
        DeploymentResponse(future=pending).result(timeout_s=0.01)
    pending.set_result(7)
    assert DeploymentResponse(future=pending).result(timeout_s=0.01) == 7


def test_result_reraises_the_calls_own_timeout() -> None:
    timed_out: concurrent.futures.Future[int] = concurrent.futures.Future()
    timed_out.set_exception(RequestTimeoutError("the call to Model-hang did not finish"))
    with pytest.raises(RequestTimeoutError, match="the call to Model-hang did not finish"):
        DeploymentResponse(future=timed_out).result(timeout_s=30)
