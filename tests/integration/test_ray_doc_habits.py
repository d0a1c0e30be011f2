"""Habits of Ray Serve's documentation examples, through real HAProxy and replicas."""

from __future__ import annotations

import concurrent.futures

import swell
from tests.integration import doc_habit_apps
from tests.integration.conftest import Swell


def test_code_shipped_by_value_serves_as_in_rays_examples(serve: Swell) -> None:
    for prefix, app in doc_habit_apps.build_apps().items():
        swell.run(app, name=prefix.strip("/"), route_prefix=prefix)

    # A batched generator: each concurrent stream gets its own numbers, then ends.
    def stream(limit: int) -> str:
        with serve.client.stream("GET", "/streams", params={"limit": limit}) as response:
            assert response.status_code == 200
            return "".join(response.iter_text())

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        assert list(pool.map(stream, [1, 3, 5])) == ["0", "012", "01234"]

    assert serve.client.get("/loop").json() == {"task_ran": True, "thread": "ok"}

    nothing = serve.client.get("/nothing")
    assert (nothing.status_code, nothing.content) == (200, b"")
    assert nothing.headers["content-type"].startswith("text/plain")

    assert serve.client.get("/bare/").json() == {"served_by": "a class ingress() made"}
    assert list(swell.status().applications["bare"].deployments) == ["ASGIIngressDeployment"]
