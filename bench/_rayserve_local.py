"""Ray Serve in HA mode on one local Ray node, serving bench_all.py's four workloads, in its
own process (Ray Serve reads its switches from the environment at import).

``python bench/_rayserve_local.py PORT`` starts Ray on this machine, deploys noop, compose,
stream and stream-handle with bench_all.py's replica counts, each under its own route prefix,
prints one JSON line (the URL of each workload), and serves until its standard input closes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Ray Serve's HA mode (HAProxy in front, direct ingress to replicas) and its throughput
# settings, for every process Ray starts (they inherit the environment).
os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"

from bench._common import HOST, READY_DEADLINE_S, wait_for_200  # noqa: E402

STREAM_QUERY = "?n=32"


def main() -> int:
    port = int(sys.argv[1])
    import ray
    from ray import serve

    from bench._rayserve_apps import Hello, Ingress, Model, StreamIngress, TokenModel, Tokens

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 * 1024)
    try:
        serve.start(http_options={"host": HOST, "port": port})
        small = {"num_cpus": 0.1}
        apps = {
            "noop": Hello.options(num_replicas=2, ray_actor_options=small).bind("Hello"),
            "compose": Ingress.options(num_replicas=1, ray_actor_options=small).bind(
                Model.options(num_replicas=2, ray_actor_options=small).bind()
            ),
            "stream": Tokens.options(num_replicas=2, ray_actor_options=small).bind(),
            "stream-handle": StreamIngress.options(num_replicas=1, ray_actor_options=small).bind(
                TokenModel.options(num_replicas=2, ray_actor_options=small).bind()
            ),
        }
        urls = {}
        for name, app in apps.items():
            serve.run(app, name=name, route_prefix=f"/{name}")
            query = STREAM_QUERY if name.startswith("stream") else "?name=Ada"
            urls[name] = f"http://{HOST}:{port}/{name}{query}"
            wait_for_200(urls[name], READY_DEADLINE_S * 4)
        print(json.dumps({"urls": urls, "pid": os.getpid()}), flush=True)
        sys.stdin.read()  # serve until the benchmark closes our input
        serve.shutdown()
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
