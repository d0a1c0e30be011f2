"""The status page: one static HTML file shipped in the package (inline JS and CSS, no CDN).

It holds no data, so it is served without a token; its script and style are pinned by hash in
a Content-Security-Policy that lets the page talk to this origin only.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from importlib import resources

from starlette.responses import Response

_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@functools.cache
def _page() -> tuple[bytes, str]:
    html = resources.files("swell._controller").joinpath("dashboard.html").read_text("utf-8")
    scripts = [_digest(body) for kind, body in _INLINE.findall(html) if kind == "script"]
    styles = [_digest(body) for kind, body in _INLINE.findall(html) if kind == "style"]
    policy = (
        "default-src 'none'; connect-src 'self'; img-src 'self' data:; "
        f"script-src {' '.join(scripts)}; style-src {' '.join(styles)}; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html.encode(), policy


def page_response() -> Response:
    body, policy = _page()
    return Response(
        body,
        media_type="text/html; charset=utf-8",
        headers={
            "content-security-policy": policy,
            "referrer-policy": "no-referrer",
            "x-content-type-options": "nosniff",
            "cache-control": "no-store",
        },
    )
