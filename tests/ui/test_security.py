"""Browser sessions keep the API's tenant scoping, refuse cross-site writes, end with their
token, at logout and at expiry, and never put a secret in a page."""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.ui.conftest import Site, fan_workflow


@pytest.fixture(scope="module")
def jobs(site: Site, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    a = site.submit("a", "a", "job-of-a", "print('a-output')")
    b = site.submit("b", "b", "job-of-b", "print('b-output')")
    marker = tmp_path_factory.mktemp("marker") / "never"
    run_b = site.start_run("b", "b", fan_workflow(marker))
    for who, job in (("a", a), ("b", b)):
        site.wait_state(who, job, "succeeded")
    return {"a": a, "b": b, "run_b": run_b}


def test_a_session_cannot_see_tenant_b(site: Site, jobs: dict[str, str]) -> None:
    with site.http_login("a") as a:
        assert a.get(f"/ui/jobs/{jobs['a']}").status_code == 200
        for path in (f"/ui/jobs/{jobs['b']}", f"/ui/runs/{jobs['run_b']}",
                     f"/ui/runs/{jobs['run_b']}/log", f"/v1/jobs/{jobs['b']}",
                     f"/v1/jobs/{jobs['b']}/logs", f"/v1/workflows/runs/{jobs['run_b']}"):
            assert a.get(path).status_code == 404, path
        listing = a.get("/ui/jobs").text
        assert "job-of-a" in listing and "job-of-b" not in listing
        assert a.get("/ui/jobs?tenant=b").status_code == 403
        assert jobs["run_b"] not in a.get("/ui/runs").text
        assert "job-of-b" not in a.get("/ui/events").text
        assert "b-output" not in a.get("/ui").text
        r = a.post(f"/ui/jobs/{jobs['b']}/cancel", headers={"Origin": site.url},
                   data={"csrf": _csrf(a)})
        assert r.status_code == 404


def _csrf(client: object) -> str:
    page = client.get("/ui").text  # type: ignore[attr-defined]
    return page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]


def test_cross_site_and_csrf_less_writes_are_refused(site: Site) -> None:
    job = site.submit("a", "a", "sleeper", "import time; time.sleep(120)")
    with site.http_login("a") as a:
        token = _csrf(a)
        for headers, data in (({"Origin": "http://evil.example"}, {"csrf": token}),
                              ({"Origin": "null"}, {"csrf": token}),
                              ({}, {"csrf": token}),
                              ({"Origin": site.url}, {}),
                              ({"Origin": site.url}, {"csrf": "forged"})):
            r = a.post(f"/ui/jobs/{job}/cancel", headers=headers, data=data)
            assert r.status_code == 403, (headers, data, r.text)
        r = a.post(f"/v1/jobs/{job}/cancel", headers={"Origin": "http://evil.example"})
        assert r.status_code == 403  # the API takes the cookie with the same checks
        assert site.job("a", job)["cancel_requested"] is False
        r = a.post(f"/ui/jobs/{job}/cancel", headers={"Origin": site.url},
                   data={"csrf": token})
        assert r.status_code == 303
    site.wait_state("a", job, "cancelled")


def test_cookie_is_httponly_and_samesite_strict(site: Site) -> None:
    import httpx

    r = httpx.post(f"{site.url}/ui/login", data={"token": site.tokens["a"]["token"]},
                   headers={"Origin": site.url})
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    r = httpx.post(f"{site.url}/ui/login", data={"token": site.tokens["a"]["token"]},
                   headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "set-cookie" not in r.headers


def test_revoked_token_ends_its_sessions(site: Site) -> None:
    import asyncio

    from bridgehead.cli.tokens import create_in_store
    from tests.ui.conftest import _in_thread

    made = _in_thread(asyncio.run, create_in_store(site.stack.dsn, "short", "client", None,
                                                   "a"))
    site.tokens["short"] = made
    with site.http_login("short") as c:
        assert c.get("/ui").status_code == 200
        assert site.api("admin", "DELETE", f"/v1/tokens/{made['id']}").status_code == 204
        r = c.get("/ui/jobs")
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
        assert c.get("/v1/jobs").status_code == 401


def test_logout_and_expiry_end_a_session(site: Site) -> None:
    with site.http_login("a") as c:
        assert c.get("/ui").status_code == 200
        secret = c.cookies["bh_session"]
        r = c.post("/ui/logout", headers={"Origin": site.url}, data={"csrf": _csrf(c)})
        assert r.status_code == 303
        c.cookies.set("bh_session", secret)
        assert c.get("/ui").status_code == 303
    with site.http_login("a") as c:
        db = sqlite3.connect(site.stack.dsn.removeprefix("sqlite:///"))
        with db:
            db.execute("UPDATE ui_sessions SET expires_at = ?", (time.time() - 1,))
        db.close()
        assert c.get("/ui").status_code == 303


def test_no_secret_in_any_page(site: Site, jobs: dict[str, str]) -> None:
    with site.http_login("a") as c:
        secrets = [site.tokens[who]["token"] for who in ("a", "b", "admin")]
        secrets.append(c.cookies["bh_session"])
        for path in ("/ui", "/ui/jobs", f"/ui/jobs/{jobs['a']}", "/ui/runs", "/ui/clusters",
                     "/ui/events", "/ui/login"):
            r = c.get(path)
            assert r.status_code == 200, path
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert not [s for s in secrets if s in r.text], path
    log = site.stack.server.output()
    assert not [s for s in secrets if s in log]


def test_bearer_calls_need_no_csrf(site: Site) -> None:
    job = site.submit("a", "a", "bearer-cancel", "import time; time.sleep(120)")
    assert site.api("a", "POST", f"/v1/jobs/{job}/cancel").status_code == 200
