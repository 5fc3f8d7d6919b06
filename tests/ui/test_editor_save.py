"""Save from the workflow editor with JavaScript off, in real Chromium: the editor's plain
form writes ``<name>.yaml`` (admins), refuses an existing file without Replace (409), shows
every error of an invalid file with its line and field (and writes nothing), refuses a bad
name at its field; a POST from another origin or by a client is refused. The answer pages
have no axe violation at 1280/320 px."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from bridgehead.workflows.spec import validate_workflow
from tests.procs import free_port
from tests.ui.conftest import PY, Console, Site, axe_violations

GOOD = ("name: saved-nojs\n"
        "defaults: {cluster: local, resources: {cores: 1, walltime: 5m}}\n"
        "steps:\n"
        f"  - {{id: one, command: [{PY}, -c, 'print(1)']}}\n")
BAD = """\
name: bad-save
defaults: {cluster: local, resources: {cores: 0, walltime: 5m}}
steps:
  - id: one
    command: [echo, one]
    retries: -1
  - id: two
    needs: [one]
    foreach: 7
    command: [echo, two]
    colour: blue
"""
"""Four errors, each at its own line and field."""


def folder(site: Site) -> Path:
    return site.stack.home / "workflows"


def save(page: Page, name: str, text: str, *, overwrite: bool = False) -> None:
    page.fill("#e-spec", text)
    page.fill("#e-save-name", name)
    if overwrite:
        page.check("#e-overwrite")
    page.click("#e-save")


def status(page: Page) -> str:
    return page.locator("#e-save-status").inner_text()


def test_save_without_javascript_writes_the_file(site: Site, browser: Browser) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = site.login(context, "admin")
        page.goto(f"{site.url}/ui/workflows/edit")
        save(page, "nojs", GOOD)
        expect(page.locator("#e-save-status")).to_have_text(
            "Saved nojs.yaml (workflow saved-nojs).")
        assert (folder(site) / "nojs.yaml").read_text() == GOOD
        assert page.input_value("#e-spec") == GOOD  # the editor again, with the file
        expect(page.locator("#h-files + ul")).to_contain_text("nojs.yaml (saved-nojs)")

        changed = GOOD.replace("print(1)", "print(2)")
        save(page, "nojs", changed)  # exists, no Replace: refused, the file as it was
        expect(page.locator("#e-save-status")).to_have_text(
            'Not saved: nojs.yaml exists: tick "Replace the file if it exists" to replace it')
        assert page.get_attribute("#e-save-name", "aria-invalid") == "true"
        assert page.input_value("#e-spec") == changed  # the user's text is kept
        assert (folder(site) / "nojs.yaml").read_text() == GOOD
        save(page, "nojs", changed, overwrite=True)
        expect(page.locator("#e-save-status")).to_have_text(
            "Saved nojs.yaml (workflow saved-nojs).")
        assert (folder(site) / "nojs.yaml").read_text() == changed
    finally:
        context.close()


def test_an_invalid_file_shows_every_error_and_is_not_written(site: Site,
                                                              browser: Browser) -> None:
    expected = [f"line {p.line}, {p.loc}: {p.detail}"
                for p in validate_workflow(BAD, "bad.yaml")]
    assert len(expected) == 4
    context = browser.new_context(java_script_enabled=False)
    try:
        page = site.login(context, "admin")
        page.goto(f"{site.url}/ui/workflows/edit")
        save(page, "bad", BAD)
        expect(page.locator("#problems .problems li")).to_have_text(expected)
        expect(page.locator("#e-save-status")).to_have_text(
            "Not saved: bad.yaml has 4 errors (listed above).")
        assert page.get_attribute("#e-spec", "aria-invalid") == "true"
        assert page.input_value("#e-spec") == BAD
        save(page, "../bad", GOOD)  # a bad name: refused at its field
        expect(page.locator("#e-save-status")).to_contain_text("Not saved: name: '../bad' is "
                                                               "not a workflow file name")
        assert page.get_attribute("#e-save-name", "aria-invalid") == "true"
        assert not (folder(site) / "bad.yaml").exists()
        assert not list(site.stack.home.glob("**/bad.yaml"))
    finally:
        context.close()


def test_answer_pages_are_accessible(site: Site, browser: Browser) -> None:
    """The no-JavaScript answers (errors; saved), posted by the form itself with JavaScript
    on (its Save button saves by fetch: ``requestSubmit`` posts the form as without it)."""
    context = browser.new_context()
    try:
        page = site.login(context, "admin")
        console = Console(page)
        for name, text, wanted in (("bad2", BAD, "4 errors"),
                                   ("good2", GOOD.replace("saved-nojs", "two"), "Saved")):
            page.goto(f"{site.url}/ui/workflows/edit")
            page.fill("#e-spec", text)
            page.fill("#e-save-name", name)
            page.evaluate("document.getElementById('wf-edit')"
                          ".requestSubmit(document.getElementById('e-save'))")
            expect(page.locator("#e-save-status")).to_contain_text(wanted)
            for width in (1280, 320):
                page.set_viewport_size({"width": width, "height": 900})
                assert axe_violations(page) == [], f"{name} at {width} px"
        # Chromium logs the one answer that refused (422: the invalid file), nothing else
        assert console.errors == ["Failed to load resource: the server responded with a "
                                  "status of 422 (Unprocessable Entity)"]
    finally:
        context.close()


@pytest.fixture
def other_origin(tmp_path: Path, site: Site) -> Iterator[str]:
    """A page on another origin of the same site (127.0.0.1, another port: the session's
    SameSite=Strict cookie IS sent) whose plain form posts a workflow to our Save."""
    port = site.stack.server.port
    (tmp_path / "index.html").write_text(
        "<!doctype html><title>elsewhere</title>"
        f'<form method="post" action="http://127.0.0.1:{port}/ui/workflows/save">'
        '<input name="name" value="forged"><input name="overwrite" value="yes">'
        f'<textarea name="spec">{GOOD}</textarea><button type="submit">go</button></form>')
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()


def test_cross_site_and_client_posts_are_refused(site: Site, browser: Browser,
                                                 other_origin: str) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = site.login(context, "admin")
        page.goto(other_origin)
        with page.expect_response(lambda r: r.url.endswith("/ui/workflows/save")) as answer:
            page.click("button[type=submit]")
        assert answer.value.status == 403
        expect(page.locator("main")).to_contain_text("cross-site request refused")
    finally:
        context.close()
    with site.http_login("admin") as admin:  # our origin, no CSRF token
        r = admin.post("/ui/workflows/save", headers={"Origin": site.url},
                       data={"name": "forged", "spec": GOOD})
        assert r.status_code == 403 and "CSRF" in r.text
    with site.http_login("a") as client:  # a client, with its own CSRF token
        page_text = client.get("/ui/workflows/edit").text
        assert 'id="e-save"' not in page_text
        csrf = page_text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        r = client.post("/ui/workflows/save", headers={"Origin": site.url},
                        data={"csrf": csrf, "name": "forged", "spec": GOOD})
        assert r.status_code == 403
    assert not (folder(site) / "forged.yaml").exists()
