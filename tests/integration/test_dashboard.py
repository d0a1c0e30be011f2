"""The status page in a real headless browser (Debian's chromium driven by Playwright).

The page must load with no console error (a wrong CSP hash or a script error would show), show
the running application, follow a scale-up made by a deploy within seconds, and leave a
screenshot in test-artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import swell
from swell import api, cli
from tests.integration import metrics_apps
from tests.integration.conftest import free_port

APP = "metrics_app"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (.ci/run installs Debian's when root)"
)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is in the dev extra; pip install -e '.[dev]'"
)


@pytest.fixture
def dashboard_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[tuple[str, str]]:
    """(the page's address as `swell dashboard` prints it, the ingress URL)."""
    port = free_port()
    swell.start(http_options={"host": "127.0.0.1", "port": port}, admin_port=0)
    try:
        swell.run(metrics_apps.app, name=APP, route_prefix="/m")
        for _ in range(5):
            assert httpx.get(f"http://127.0.0.1:{port}/m/ok", timeout=30).status_code == 200
        assert api._instance is not None
        token_file = tmp_path / "admin.token"
        token_file.write_text(api._instance.admin_token)
        os.chmod(token_file, 0o600)
        admin = f"http://127.0.0.1:{swell.status().raw['admin_port']}"
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            cli.main(["dashboard", "--address", admin, "--token-file", str(token_file)])
        assert exited.value.code == 0
        url = capsys.readouterr().out.strip()
        assert url.startswith(f"{admin}/dashboard#view=")
        yield url, f"http://127.0.0.1:{port}"
    finally:
        swell.shutdown()


def test_status_page_shows_the_app_and_follows_a_scale_up(
    dashboard_url: tuple[str, str], tmp_path: Path
) -> None:
    url, ingress = dashboard_url
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on(
                "console",
                lambda message: problems.append(message.text) if message.type == "error" else None,
            )
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(url)
            # Locator assertions poll without eval(), which the page's CSP forbids.
            model = page.locator('[data-deployment="metrics_app/Model"] .replicas')
            sync_api.expect(model).to_have_text("1 / 1", timeout=20_000)
            # The token left the address bar once it was read.
            assert "view=" not in page.url
            assert page.inner_text('[data-app="metrics_app"] .state') == "RUNNING"
            events = page.locator("#events")
            sync_api.expect(events).to_contain_text("replica_running")
            sync_api.expect(events).to_contain_text("deployed")
            # Traffic while the page watches: the ingress's req/s turns non-zero.
            for _ in range(10):
                assert httpx.get(f"{ingress}/m/ok", timeout=30).status_code == 200
            rate = page.locator('[data-deployment="metrics_app/Front"] .rps')
            sync_api.expect(rate).to_have_text(re.compile(r"^\d*[1-9][\d.]*$|^0\.[1-9]\d*$"))

            # A deploy with more replicas: the page shows them within seconds, no reload.
            scaled = metrics_apps.Front.bind(metrics_apps.Model.options(num_replicas=2).bind())
            swell.run(scaled, name=APP, route_prefix="/m")
            sync_api.expect(model).to_have_text("2 / 2", timeout=20_000)
            rows = page.locator('[data-deployment="metrics_app/Model"] [data-replica]')
            assert rows.count() == 2
            ARTIFACTS.mkdir(exist_ok=True)
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            shutil.copy(shot, ARTIFACTS / "dashboard.png")
        finally:
            browser.close()
    assert problems == []
