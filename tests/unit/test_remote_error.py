"""A remote exception arrives as its own type and as swell.RemoteError."""

from __future__ import annotations

import pickle

import pytest

import swell
from swell._dataplane import codec


class NeedsTwoArguments(Exception):
    """An exception whose __init__ cannot be called again with its message alone."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code


class NoDict(OSError):
    pass


def roundtrip(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as raised:
        payload = codec.encode_error(raised)
    with pytest.raises(BaseException) as caught:
        codec.decode(payload, "method", "replica-1")
    return caught.value


def test_builtin_type_is_kept_and_is_a_remote_error() -> None:
    error = roundtrip(ValueError("bad input 7"))
    assert isinstance(error, ValueError)
    assert isinstance(error, swell.RemoteError)
    assert type(error).__name__ == "ValueError"
    assert error.args == ("bad input 7",)
    assert error.remote_type == "ValueError"
    assert "raise error" in error.remote_traceback
    assert "bad input 7" in str(error) and "Remote traceback" in str(error)
    with pytest.raises(ValueError, match="bad input 7"):
        raise error


def test_user_type_keeps_its_attributes_without_rerunning_init() -> None:
    error = roundtrip(NeedsTwoArguments(404, "missing"))
    assert isinstance(error, NeedsTwoArguments) and isinstance(error, swell.RemoteError)
    assert error.code == 404
    assert error.args == (404, "missing")


def test_os_errors_and_swell_errors_keep_their_types() -> None:
    assert isinstance(roundtrip(NoDict(2, "gone")), OSError)
    timeout = roundtrip(swell.RequestTimeoutError("callee timed out"))
    assert isinstance(timeout, swell.RequestTimeoutError)
    assert isinstance(timeout, TimeoutError)
    assert isinstance(timeout, swell.RemoteError)


def test_a_dual_error_passed_on_pickles_and_is_rebuilt() -> None:
    error = roundtrip(KeyError("k"))
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, KeyError) and isinstance(again, swell.RemoteError)
    # A caller that passes it on to its own caller: still both types there.
    assert isinstance(roundtrip(error), KeyError)


def test_a_type_the_caller_cannot_import_falls_back_to_remote_error() -> None:
    payload = codec.dumps(
        (codec.ERROR, ("GoneError", "from a module only the callee has", "Traceback ...", None))
    )
    with pytest.raises(swell.RemoteError) as caught:
        codec.decode(payload, "method", "replica-1")
    assert type(caught.value) is swell.RemoteError
    assert caught.value.remote_type == "GoneError"
