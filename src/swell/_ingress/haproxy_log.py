"""HAProxy's access lines: what it writes to its output (the instance's ``haproxy.log``).

A line per request, starting with the time it was accepted (``<epoch seconds>.<ms>``, which
``swell logs`` turns into swell's UTC time), then the client, method, URI, status, bytes, the
timings ``Tw`` (queued), ``Tc`` (connecting), ``Tr`` (the replica's answer), ``Ta`` (all,
milliseconds; -1 when that phase never ended), backend/server and the request id::

    1764597511.123 haproxy 127.0.0.1:51234 GET /?x=1 200 17 Tw=0 Tc=0 Tr=2 Ta=3
        app_default/Model-1a2b3c4d request_id=9f0e...  (one line)

``log stdout`` works in master-worker mode on 2.6 and 2.8 without a syslog: the workers
inherit the master's output, which the supervisor opened on the file.
"""

from __future__ import annotations

import re

LOG_FORMAT = (
    "%Ts.%ms haproxy %ci:%cp %HM %HU %ST %B Tw=%Tw Tc=%Tc Tr=%Tr Ta=%Ta %b/%s "
    "request_id=%[var(txn.swell_request_id)]"
)

_ACCESS_LINE = re.compile(r"^\d+\.\d{3} haproxy ")


def frontend_lines(health_acl: str) -> list[str]:
    """Logging for the frontend alone (so server state changes are not logged twice); its
    own health probes (load balancers') are not logged."""
    return [
        "    log stdout format raw local0 info",
        f'    log-format "{LOG_FORMAT}"',
        f"    http-request set-log-level silent if {health_acl}",
    ]


def is_access_line(line: str) -> bool:
    """Whether a line of HAProxy's output is an access line (not one of its messages)."""
    return _ACCESS_LINE.match(line) is not None
