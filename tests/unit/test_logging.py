"""Log lines (TEXT and JSON), the request context, access lines, and merging files by time."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import swell
from swell._context import multiplexed_model_id
from swell._ingress.haproxy_log import LOG_FORMAT, is_access_line
from swell._logging import files
from swell._logging.access import AccessLog, LoggedDispatcher
from swell._logging.files import (
    AppendHandler,
    instance_logs_dir,
    parse_replica_file_name,
    replica_file_name,
)
from swell._logging.format import Component, SwellFormatter, utc_time
from swell._logging.reader import find_log_files, read_records
from swell._logging.replica import _LinesToLog
from swell.context import (
    _get_serve_request_context,
    _RequestContext,
    _set_request_context,
    call_metadata,
    enter_call,
)

REPLICA = Component("replica", "Model-1a2b3c4d", "default", "Model")


def record(message: str, level: int = logging.INFO, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("user.module", level, "/app/model.py", 42, message, (), None)
    made.created = 1764597511.25
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def in_request(fn: Any, request_id: str = "req-1", route: str = "/api") -> Any:
    """Run ``fn`` in a fresh context that serves one request."""

    def run() -> Any:
        _set_request_context(_RequestContext(route, request_id, "default", True))
        return fn()

    return contextvars.copy_context().run(run)


def test_text_lines_start_with_utc_time_and_carry_who_and_which_request() -> None:
    formatter = SwellFormatter(REPLICA, "TEXT", ("name",))
    line = in_request(lambda: formatter.format(record("hello")))
    assert line == (
        "2025-12-01 13:58:31.250 INFO [default/Model Model-1a2b3c4d req-1] hello name=user.module"
    )
    outside = formatter.format(record("idle"))
    assert "[default/Model Model-1a2b3c4d -] idle" in outside


def test_json_lines_use_rays_field_names() -> None:
    formatter = SwellFormatter(REPLICA, "JSON", ("name", "funcName"))
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed", logging.ERROR)
        failed.exc_info = sys.exc_info()
    document = json.loads(in_request(lambda: formatter.format(failed)))
    assert document["message"] == "failed"
    assert document["levelname"] == "ERROR"
    assert document["application"] == "default"
    assert document["deployment"] == "Model"
    assert document["replica"] == "Model-1a2b3c4d"
    assert document["component_name"] == "replica"
    assert document["request_id"] == "req-1"
    assert document["route"] == "/api"
    assert document["filename"] == "model.py" and document["lineno"] == 42
    assert document["timestamp_ns"] == 1764597511250000000
    assert document["asctime"] == "2025-12-01 13:58:31.250"
    assert document["name"] == "user.module"
    assert "ValueError: boom" in document["exc_text"]


def test_the_request_context_outside_inside_and_across_a_call() -> None:
    assert swell.get_request_id() == ""
    assert call_metadata() is None
    assert in_request(call_metadata) == ("req-1", "/api")

    def callee() -> tuple[str, str, str, str]:
        enter_call(("req-9", "/x"), "other_app")
        multiplexed_model_id.set("m1")  # as the data plane sets a handle call's model id
        context = _get_serve_request_context()
        return swell.get_request_id(), context.route, context.app_name, context.multiplexed_model_id

    assert contextvars.copy_context().run(callee) == ("req-9", "/x", "other_app", "m1")
    assert swell.get_request_id() == ""  # nothing leaked out of the call's context


def test_replica_file_names_say_whose_they_are() -> None:
    name = replica_file_name("my.app", "My_Model-1a2b3c4d")
    assert parse_replica_file_name(name) == ("my.app", "My_Model", "My_Model-1a2b3c4d")
    assert parse_replica_file_name("controller.log") is None
    assert parse_replica_file_name("replica_nothing.log") is None


def test_a_state_dir_keeps_its_logs_in_logs(tmp_path: Path) -> None:
    logs_dir = instance_logs_dir(tmp_path)
    assert logs_dir == tmp_path.absolute() / "logs"
    assert logs_dir.is_dir() and logs_dir.stat().st_mode & 0o077 == 0


def test_only_the_latest_stopped_instances_logs_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "runtime_dir", lambda: tmp_path)
    parent = tmp_path / "logs"
    parent.mkdir()
    gone_pid = 4194303  # above any pid this machine has handed out in a test run
    stopped = [parent / f"20260101-0000{i:02d}-{gone_pid}" for i in range(15)]
    running = parent / f"20250101-000000-{os.getpid()}"  # the oldest, but alive
    for directory in [*stopped, running]:
        directory.mkdir()
    new = files.instance_logs_dir(None)
    assert new.parent == parent.absolute() and new.name.endswith(f"-{os.getpid()}")
    kept = sorted(p for p in parent.iterdir() if p != new)
    assert kept == sorted([running, *stopped[-files.KEEP_STOPPED_INSTANCES :]])


def write(path: Path, *lines: str) -> None:
    with path.open("a") as file:
        file.write("".join(line + "\n" for line in lines))


def test_files_merge_by_time_with_tracebacks_kept_whole_and_haproxy_times_shown(
    tmp_path: Path,
) -> None:
    write(
        tmp_path / "replica_default+Model-1a2b3c4d.log",
        "2025-12-01 13:58:31.100 INFO [default/Model Model-1a2b3c4d r1] first",
        "2025-12-01 13:58:31.300 ERROR [default/Model Model-1a2b3c4d r1] failed",
        "Traceback (most recent call last):",
        "ValueError: boom",
    )
    write(
        tmp_path / "replica_default+Ingress-00000000.log",
        json.dumps({"timestamp_ns": 1764597511_200_000_000, "message": "json in between"}),
    )
    write(
        tmp_path / "haproxy.log",
        "[NOTICE]   (1) : New worker (2) forked",
        "1764597511.250 haproxy 127.0.0.1:1 GET / 200 2 Tw=0 Tc=0 Tr=1 Ta=1 app_default/I-1 "
        "request_id=r1",
        "1764597511.260 haproxy 127.0.0.1:1 GET /o 200 2 Tw=0 Tc=0 Tr=1 Ta=1 app_other/O-1 "
        "request_id=r2",
    )
    write(tmp_path / "controller.log", "2025-12-01 13:58:31.000 INFO [controller 1 -] up")

    everything, _ = read_records(find_log_files([tmp_path]), None)
    texts = [text for _, text in everything]
    assert texts[0] == "[NOTICE]   (1) : New worker (2) forked"  # no time: first in its file
    assert [t.split(" ", 3)[3][:12] for t in texts[1:3]] == ["[controller ", "[default/Mod"]
    assert '"json in between"' in texts[3]
    assert texts[4].startswith("2025-12-01 13:58:31.250 haproxy ")
    assert texts[6].endswith("failed\nTraceback (most recent call last):\nValueError: boom")

    one_app, _ = read_records(find_log_files([tmp_path], "default"), None, "default")
    shown = "\n".join(text for _, text in one_app)
    assert "app_other" not in shown and "[controller" not in shown and "NOTICE" not in shown
    assert "app_default/I-1" in shown

    one_deployment = find_log_files([tmp_path], "default", "Model")
    assert [f.path.name for f in one_deployment] == ["replica_default+Model-1a2b3c4d.log"]


def test_a_cursor_returns_only_complete_new_lines(tmp_path: Path) -> None:
    path = tmp_path / "replica_default+Model-1a2b3c4d.log"
    write(path, "2025-12-01 13:58:31.100 INFO [x] old")
    files = find_log_files([tmp_path])
    records, cursor = read_records(files, None)
    assert [text[-3:] for _, text in records] == ["old"]
    with path.open("a") as file:
        file.write("2025-12-01 13:58:32.100 INFO [x] new\n2025-12-01 13:58:33.100 INFO [x] half")
    records, cursor = read_records(files, cursor)
    assert [text[-3:] for _, text in records] == ["new"]
    with path.open("a") as file:
        file.write("way\n")
    records, cursor = read_records(files, cursor)
    assert [text[-7:] for _, text in records] == ["halfway"]
    assert read_records(files, cursor)[0] == []


def test_haproxy_access_lines_are_told_from_its_messages() -> None:
    assert "%Tw" in LOG_FORMAT and "%Tc" in LOG_FORMAT and "%Tr" in LOG_FORMAT
    assert "txn.swell_request_id" in LOG_FORMAT
    assert is_access_line("1764597511.250 haproxy 127.0.0.1:1 GET / 200")
    assert not is_access_line("[ALERT]    (1) : config : parsing error")
    assert utc_time(1764597511.25) == "2025-12-01 13:58:31.250"


class _Echo:
    async def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if method == "fail":
            raise ValueError("no")
        return args

    async def stream(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        for item in args:
            yield item


def test_handle_calls_get_access_lines_unless_turned_off(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    handler = AppendHandler(path)
    handler.setFormatter(SwellFormatter(REPLICA))
    access_logger = logging.getLogger("swell.access")
    access_logger.addHandler(handler)
    previous = access_logger.level
    access_logger.setLevel(logging.INFO)
    try:

        async def calls(dispatcher: LoggedDispatcher) -> None:
            assert await dispatcher.call("ok", (1,), {}) == (1,)
            with pytest.raises(ValueError):
                await dispatcher.call("fail", (), {})
            assert [i async for i in dispatcher.stream("items", (1, 2), {})] == [1, 2]

        asyncio.run(calls(LoggedDispatcher(_Echo(), AccessLog(True))))
        asyncio.run(calls(LoggedDispatcher(_Echo(), AccessLog(False))))
    finally:
        access_logger.removeHandler(handler)
        access_logger.setLevel(previous)
        handler.close()
    lines = path.read_text().splitlines()
    assert [line.split("] ", 1)[1].rsplit(" ", 1)[0] for line in lines] == [
        "CALL ok OK",
        "CALL fail ERROR",
        "CALL items OK",
    ]


def test_prints_become_one_record_per_line(tmp_path: Path) -> None:
    captured: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record.getMessage())

    print_logger = logging.getLogger("swell.print")
    collector = Collect()
    print_logger.addHandler(collector)
    previous = print_logger.level
    print_logger.setLevel(logging.INFO)
    try:
        stream = _LinesToLog(logging.INFO, 1)
        print("one", "two", file=stream)
        stream.write("three\nfour")
        assert captured == ["one two", "three"]
        stream.flush()
        assert captured == ["one two", "three", "four"]
    finally:
        print_logger.removeHandler(collector)
        print_logger.setLevel(previous)


def test_access_lines_skip_the_log_record_and_share_one_write(tmp_path: Path) -> None:
    path = tmp_path / "replica_default+Model-1a2b3c4d.log"
    handler = AppendHandler(path)
    formatter = SwellFormatter(REPLICA, "JSON")
    handler.setFormatter(formatter)
    logger = logging.getLogger("swell.access")
    previous = logger.level
    logger.setLevel(logging.INFO)

    async def serve() -> list[str]:
        _set_request_context(_RequestContext("/", "req-7", "default", True))
        access = AccessLog(
            True,
            lambda message: handler.write_line(formatter.format_info(message, ("access.py", 0))),
        )
        for _ in range(3):
            access.http("GET", "/", 200, 0.0)
        assert access.enabled
        before = path.read_text()
        await asyncio.sleep(0)
        next_turn = path.read_text()  # they wait for a moment, to share a write with more
        # A record logged meanwhile sends them first: the file keeps their order.
        handler.handle(logging.LogRecord("user", logging.INFO, "x.py", 1, "mine", None, None))
        after_record = path.read_text()
        for _ in range(200):
            access.http("GET", "/", 200, 0.0)
        async with asyncio.timeout(10):
            while path.read_text() == after_record:
                await asyncio.sleep(0.01)
        assert handler.flushes_scheduled == 2  # one timer for the 3, one for the 200
        return [before, next_turn, after_record, path.read_text()]

    try:
        before, next_turn, after_record, final = asyncio.run(serve())
    finally:
        logger.setLevel(previous)
        handler.close()
    assert before == next_turn == ""
    documents = [json.loads(line) for line in after_record.splitlines()]
    assert [d["message"] for d in documents][3:] == ["mine"]
    assert documents[0]["request_id"] == "req-7" and documents[0]["replica"] == "Model-1a2b3c4d"
    assert documents[0]["message"].startswith("GET / 200 ")
    assert len(final.splitlines()) == 204
