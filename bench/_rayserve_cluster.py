"""Ray Serve in HA mode on bench_ray.py's cluster shape, in its own process (Ray Serve reads
its switches from the environment at import, and needs its own Ray driver).

``python bench/_rayserve_cluster.py PORT`` starts a head node (no replicas; its HAProxy on
PORT) and two workers, deploys hello and compose with one replica of each ingress per worker,
prints one JSON line (URLs, deploy-to-first-200 seconds, pids), and serves until its standard
input closes.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Ray Serve's HA mode (HAProxy in front, direct ingress to replicas) and its throughput
# settings, for every process of the cluster (the raylets pass the environment on).
os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"

from bench._common import HOST, QUERY, READY_DEADLINE_S, check_body, wait_for_200  # noqa: E402

_HELLO_SLOT = "bench_hello_slot"
_INGRESS_SLOT = "bench_ingress_slot"


def _node(slots: int) -> dict[str, Any]:
    return {
        "num_cpus": 2,
        "object_store_memory": 80 * 1024 * 1024,
        "resources": {_HELLO_SLOT: slots, _INGRESS_SLOT: slots},
    }


def _first_200_after(url: str, started: float, result: dict[str, float]) -> None:
    """Poll ``url`` from ``started`` until it answers 200; record the seconds it took."""
    wait_for_200(url, READY_DEADLINE_S * 4)
    result["s"] = time.monotonic() - started


def main() -> int:
    port = int(sys.argv[1])
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from bench._rayserve_apps import Hello, Ingress, Model

    cluster = Cluster(initialize_head=True, head_node_args={**_node(0), "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(**_node(1))
        ray.init(address=cluster.address)
        serve.start(http_options={"host": HOST, "port": port, "location": "HeadOnly"})

        def placed(slot: str) -> dict[str, Any]:
            return {"num_cpus": 0.1, "resources": {slot: 1}}

        hello_url = f"http://{HOST}:{port}/hello{QUERY[1:]}"
        first: dict[str, float] = {}
        started = time.monotonic()
        poller = threading.Thread(target=_first_200_after, args=(hello_url, started, first))
        poller.start()
        serve.run(
            Hello.options(num_replicas=2, ray_actor_options=placed(_HELLO_SLOT)).bind("Hello"),
            name="hello",
            route_prefix="/hello",
        )
        poller.join()
        serve.run(
            Ingress.options(num_replicas=2, ray_actor_options=placed(_INGRESS_SLOT)).bind(
                Model.options(num_replicas=1, ray_actor_options={"num_cpus": 0.1}).bind()
            ),
            name="compose",
            route_prefix="/compose",
        )
        urls = {"hello": hello_url, "compose": f"http://{HOST}:{port}/compose{QUERY[1:]}"}
        for url in urls.values():
            wait_for_200(url, READY_DEADLINE_S)
            check_body(url)
        print(json.dumps({"urls": urls, "deploy_to_first_200_s": first.get("s")}), flush=True)
        sys.stdin.read()  # serve until the benchmark closes our input
        serve.shutdown()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
