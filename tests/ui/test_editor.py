"""The workflow editor in real Chromium: every error of a file shown with its line and
field (the parser of ``bridgehead workflow validate``), a fixed file started as a run with
params, downloaded as ``<name>.yaml``; clean and accessible at both widths, and usable with
JavaScript off."""

from __future__ import annotations

import sys

from playwright.sync_api import Browser, expect

from tests.ui.conftest import Console, Site, axe_violations

GOOD = f"""\
name: edited
params: {{who: nobody}}
defaults: {{cluster: local, resources: {{cores: 1, walltime: 5m}}}}
steps:
  - id: greet
    command: [{sys.executable}, -c, "print('hello {{{{ params.who }}}}')"]
  - id: after
    needs: [greet]
    command: [{sys.executable}, -c, "print('done')"]
"""
BAD = GOOD.replace("cores: 1", "cores: 0").replace("needs: [greet]", "needs: [gret]")


def test_errors_at_their_fields_then_run_and_download(site: Site, browser: Browser) -> None:
    for js in (True, False):
        context = browser.new_context(java_script_enabled=js)
        try:
            page = site.login(context, "a")
            console = Console(page)
            page.goto(f"{site.url}/ui/workflows/edit")
            page.fill("#e-spec", BAD)
            page.click("button[value=check]")
            # the answer's page (expect waits for it), not the one that posted
            expect(page.locator("#problems .problems li")).to_have_text([
                "line 3, defaults.resources.cores: Input should be greater than or equal to "
                "1"])  # the schema's errors come first
            assert page.get_attribute("#e-spec", "aria-invalid") == "true"
            for width in (1280, 320) if js else ():  # axe is a script: not without JS
                page.set_viewport_size({"width": width, "height": 900})
                assert axe_violations(page) == [], f"editor at {width} px"
            page.fill("#e-spec", BAD.replace("cores: 0", "cores: 1"))
            page.click("button[value=check]")
            expect(page.locator("#problems .problems li")).to_have_text([
                "line 8, steps[1].needs[0]: unknown step 'gret'"])
            page.fill("#e-spec", GOOD)
            page.click("button[value=check]")
            expect(page.locator("#problems")).to_contain_text("No error: this file can run.")
            if js:  # the same form posts either way; one download is enough
                with page.expect_download() as download:
                    page.click("button[value=download]")
                assert download.value.suggested_filename == "edited.yaml"
                assert open(download.value.path()).read() == GOOD
            page.fill("#e-params", "who: the editor")
            page.click("button[value=run]")
            page.wait_for_url(f"{site.url}/ui/runs/r-*")
            run_id = page.url.rsplit("/", 1)[1]
            run = site.wait_run("a", run_id, "succeeded")
            assert run["params"] == {"who": "the editor"} and run["tenant"] == "a"
            log = site.api("a", "GET", f"/v1/workflows/runs/{run_id}/log").text
            assert "hello the editor" in log
            assert console.errors == []
        finally:
            context.close()


def test_bad_params_are_named_and_nothing_starts(site: Site, browser: Browser) -> None:
    context = browser.new_context()
    try:
        page = site.login(context, "a")
        page.goto(f"{site.url}/ui/workflows/edit")
        page.fill("#e-spec", GOOD)
        page.fill("#e-params", "- not a mapping")
        page.click("button[value=run]")
        assert "params: give a mapping" in page.content()
        assert "/ui/workflows/edit" in page.url
    finally:
        context.close()


def test_copying_a_run_of_another_tenant_is_not_found(site: Site) -> None:
    run_b = site.start_run("b", "b", GOOD)
    with site.http_login("a") as a:
        assert a.get(f"/ui/workflows/edit?from_run={run_b}").status_code == 404
    with site.http_login("b") as b:
        page = b.get(f"/ui/workflows/edit?from_run={run_b}").text
        assert "name: edited" in page


def test_errors_show_as_you_type(site: Site, browser: Browser) -> None:
    """With JavaScript, the editor checks the file while it is typed (POST
    /v1/workflows/validate with the session and its CSRF token)."""
    context = browser.new_context()
    try:
        page = site.login(context, "a")
        console = Console(page)
        page.goto(f"{site.url}/ui/workflows/edit")
        live = page.locator("#live-problems li")
        page.fill("#e-spec", BAD.replace("cores: 0", "cores: 1"))
        expect(live).to_have_text(["line 8, steps[1].needs[0]: unknown step 'gret'"])
        page.fill("#e-spec", GOOD)
        expect(live).to_have_text(["No error."])
        assert page.get_attribute("#e-spec", "aria-invalid") == "false"
        assert axe_violations(page) == []
        assert console.errors == []
    finally:
        context.close()
