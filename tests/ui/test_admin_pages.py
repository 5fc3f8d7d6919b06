"""Admin pages in real Chromium: Tokens (create shows the secret once, revoke; clean and
accessible at both widths) and Rules (disable and enable); a client is refused both writes
and the Tokens page."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from tests.procs import eventually
from tests.ui.conftest import Console, Site, axe_violations

RULE = {"name": "nightly", "match": {"type": "clock.tick"},
        "actions": [{"submit_job": {"cluster": "local", "command": ["echo", "tick"]}}]}


def test_tokens_page_creates_and_revokes(site: Site, browser: Browser) -> None:
    context = browser.new_context()
    try:
        page = site.login(context, "admin")
        console = Console(page)
        page.click("nav >> text=Tokens")
        for width in (1280, 320):
            page.set_viewport_size({"width": width, "height": 900})
            assert axe_violations(page) == [], f"tokens at {width} px"
        page.fill("#t-name", "made-in-ui")
        page.select_option("#t-role", "client")
        page.fill("#t-tenant", "a")
        page.click("form.filters button[type=submit]")
        secret = page.locator("#h-new + p + pre").inner_text().strip()
        assert secret.startswith("bh_")
        assert site.api("admin", "GET", "/v1/tokens").status_code == 200
        made = httpx_get(site, secret, "/v1/jobs")
        assert made == 200  # the new token works
        assert axe_violations(page) == []
        page.goto(f"{site.url}/ui/tokens")
        assert secret not in page.content()  # shown once only
        page.click("text=Revoke made-in-ui")
        expect(page.locator("text=Revoke made-in-ui")).to_have_count(0)
        eventually(lambda: httpx_get(site, secret, "/v1/jobs") == 401, 30,
                   what="the revoked token refused (the API caches a token for 5 s)")
        assert console.errors == []
    finally:
        context.close()


def httpx_get(site: Site, token: str, path: str) -> int:
    import httpx

    return httpx.get(f"{site.url}{path}", headers={"Authorization": f"Bearer {token}"},
                     timeout=30).status_code


def test_rules_disable_and_enable(site: Site, browser: Browser) -> None:
    assert site.api("admin", "PUT", "/v1/rules", json={"rules": [RULE]}).status_code == 200
    context = browser.new_context()
    try:
        page = site.login(context, "admin")
        page.goto(f"{site.url}/ui/rules")
        page.click("text=Disable nightly")
        [rule] = [r for r in site.api("admin", "GET", "/v1/rules").json()
                  if r["name"] == "nightly"]
        assert rule["enabled"] is False
        page.click("text=Enable nightly")
        [rule] = [r for r in site.api("admin", "GET", "/v1/rules").json()
                  if r["name"] == "nightly"]
        assert rule["enabled"] is True
    finally:
        context.close()


def test_a_client_may_not_use_admin_pages(site: Site) -> None:
    with site.http_login("a") as c:
        csrf = c.get("/ui").text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        assert c.get("/ui/tokens").status_code == 403
        assert "Tokens" not in c.get("/ui").text.split("</nav>")[0]
        for path, data in (("/ui/tokens", {"name": "x", "role": "admin"}),
                           ("/ui/rules/nightly/enabled", {"enabled": "false"})):
            r = c.post(path, headers={"Origin": site.url}, data={**data, "csrf": csrf})
            assert r.status_code == 403, path
