"""The replica's request guard: a client that leaves cancels the handler, however the
application reads its request."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from starlette.types import Message

from swell._replica.request_guard import RequestGuard


async def _never_sends(message: Message) -> None:
    raise AssertionError(f"nothing is sent here: {message}")


def test_a_watch_asked_for_while_the_app_reads_starts_even_if_that_read_is_cancelled() -> None:
    """An application that listens for the disconnect itself (the LLM app does, while the
    engine starts) and then stops listening must not leave the request unwatched."""

    async def main() -> None:
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        listening_stopped: asyncio.Future[RequestGuard] = asyncio.get_running_loop().create_future()

        async def handler() -> None:
            guard = RequestGuard(inbox.get, _never_sends, None)
            listener = asyncio.ensure_future(guard.receive())  # the app's own listener
            for _ in range(100):
                if guard._reading:
                    break
                await asyncio.sleep(0)
            assert guard._reading
            guard.start_watching()  # the guard's timer fires while the app is reading
            listener.cancel()  # the app's work is done first: it stops listening
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            listening_stopped.set_result(guard)
            await asyncio.Event().wait()  # a long stream: only the guard can end it

        task = asyncio.ensure_future(handler())
        guard = await listening_stopped
        await inbox.put({"type": "http.disconnect"})  # the client leaves
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert guard.disconnected

    asyncio.run(main())


def test_a_send_the_server_refuses_because_the_client_left_marks_the_request_disconnected() -> None:
    """swell's server raises OSError from send() once the client is gone (ASGI 2.4), often
    before any receive() has seen the disconnect: the request ends as a disconnect (499, not
    logged as a failure)."""

    async def gone(message: Message) -> None:
        raise OSError("the client has disconnected")

    async def nothing() -> Message:
        raise AssertionError("not read")

    async def main() -> None:
        guard = RequestGuard(nothing, gone, None)
        with pytest.raises(OSError):
            await guard.send({"type": "http.response.body", "body": b"x", "more_body": True})
        assert guard.disconnected

    asyncio.run(main())
