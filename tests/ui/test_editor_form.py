"""The workflow editor's form in real Chromium: generated from the workflow schema, every
invalid case of the workflow spec tests shown at its field (aria-invalid, aria-describedby)
or, for the YAML's own errors, at its line; the example workflows through YAML -> form ->
YAML unchanged (as parsed); a workflow edited in the form, saved by an admin and run; Save
refused to a client and for a hostile name; axe-clean at both widths, no console error."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from bridgehead.errors import InvalidSpec
from bridgehead.workflows.spec import parse_workflow
from tests.ui.conftest import Console, Site, axe_violations
from tests.ui.test_editor import GOOD as EDITED
from tests.unit import test_workflow_problems, test_workflow_spark, test_workflow_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [*sorted(ROOT.glob("examples/workflows/*.yaml")),
            *sorted(ROOT.glob("src/bridgehead/demo/*.yaml"))]
GOOD = EDITED.replace("name: edited\n", "name: formed\n", 1)
WAIT = 30_000
"""ms: what the page waits for at most (a check is a round trip to a busy server)."""
FLOATS = """\
name: floats
params: {ratio: 1.0, big: 1.0e+20, n: 2, when: 2026-12-05, flag: true, none: null}
defaults: {cluster: local}
steps:
  - id: a
    env: {R: 2.0, S: "2.0", T: 7}
    command: [echo, 3.0, "{{ params.ratio }}", 4]
"""
"""Values a browser's numbers could change: 1.0 must stay 1.0 (it reads "1.0" in argv)."""
SAVED = "Saved formed.yaml (workflow formed)."
LOC = re.compile(r"[A-Za-z_]\w*(\[\d+\]|\.[\w.]+)*")


def _params(test: Any) -> list[Any]:
    """The cases of a parametrized unit test, as the test itself lists them."""
    [mark] = [m for m in test.pytestmark if m.name == "parametrize"]
    return list(mark.args[1])


def invalid_cases() -> list[str]:
    """Every invalid workflow of the workflow spec tests (tests/unit)."""
    spec = test_workflow_spec
    texts = [spec.one_step(body) for body, _ in _params(spec.test_field_errors)]
    texts += [text for text, _ in _params(spec.test_file_level_errors)]
    texts += _params(test_workflow_problems.test_parse_workflows_error_is_always_among_them)
    flow = test_workflow_spark.FLOW
    texts += [flow.replace(old, new, 1) for old, new, _ in
              _params(test_workflow_spark.test_a_bad_spark_step_is_refused_at_its_field)]
    texts += [spec.one_step("- id: a\n  command: echo hello; rm -rf /\n"),
              spec.one_step("- id: a\n  command: [echo]\n  resources:\n    cores: 0\n")]
    return list(dict.fromkeys(texts))


def expected(text: str) -> tuple[int, str, str]:
    """(line, field, detail) of the parser's error (``bridgehead workflow validate``'s)."""
    with pytest.raises(InvalidSpec) as caught:
        parse_workflow(text, "w.yaml")
    line, rest = caught.value.message.removeprefix("w.yaml:").split(": ", 1)
    where, sep, detail = rest.partition(": ")
    if sep and LOC.fullmatch(where) and where != "invalid YAML":
        return int(line), where, detail
    return int(line), "", rest


def refusals(console: Console, *statuses: int) -> list[str]:
    """The page's console errors but Chromium's line for each refusal the test asked for
    (a fetch answered 4xx is logged as an error)."""
    codes = "|".join(map(str, statuses))
    ours = re.compile(rf"Failed to load resource: the server responded with a status of "
                      rf"({codes}) \(.*\)")
    return [e for e in console.errors if not ours.fullmatch(e)]


def open_editor(site: Site, page: Page) -> None:
    page.goto(f"{site.url}/ui/workflows/edit")
    expect(page.locator("#tab-form")).to_be_visible(timeout=WAIT)


def on_tab(page: Page, mode: str) -> None:
    """The tab of ``mode`` is selected, its panel shown and the other's hidden."""
    expect(page.locator(f"#tab-{mode}")).to_have_attribute("aria-selected", "true",
                                                          timeout=WAIT)
    shown, hidden = ("#e-spec", "#wf-form") if mode == "yaml" else ("#wf-form", "#e-spec")
    expect(page.locator(shown)).to_be_visible(timeout=WAIT)
    expect(page.locator(hidden)).to_be_hidden(timeout=WAIT)


def to_form(page: Page, text: str) -> None:
    page.click("#tab-yaml")
    on_tab(page, "yaml")
    page.fill("#e-spec", text)
    page.click("#tab-form")


def described(page: Page, selector: str) -> str:
    """The text of what the element's aria-describedby names."""
    return str(page.eval_on_selector(selector, "e => (e.getAttribute('aria-describedby') || '')"
                                    ".split(' ').filter(Boolean).map(i => document."
                                    "getElementById(i)?.textContent || '').join(' | ')"))


def test_every_invalid_case_shows_its_error_at_its_field(site: Site, browser: Browser) -> None:
    context = browser.new_context()
    try:
        page = site.login(context, "a")
        console = Console(page)
        open_editor(site, page)
        cases = invalid_cases()
        assert len(cases) > 30
        for text in cases:
            line, loc, detail = expected(text)
            to_form(page, text)
            if not loc:  # the file itself: the form cannot show it; the YAML tab, at its line
                expect(page.locator("#form-blocked")).not_to_be_empty(timeout=WAIT)
                on_tab(page, "yaml")
                shown = page.locator("#live-problems li").all_inner_texts()
                assert any(s.startswith(f"line {line}: ") and detail in s for s in shown), (
                    text, line, detail, shown)
                assert page.get_attribute("#e-spec", "aria-invalid") == "true"
                assert "live-problems" in (page.get_attribute("#e-spec", "aria-describedby")
                                           or "")
                page.locator("#live-problems button").first.click()  # selects its line
                assert page.eval_on_selector("#e-spec", "e => e.selectionStart") == len(
                    "".join(text.splitlines(True)[:line - 1]))
                continue
            field = f'#wf-form [data-loc="{loc}"]'
            on_tab(page, "form")
            expect(page.locator(field)).to_have_attribute("aria-invalid", "true", timeout=WAIT)
            assert page.locator(field).count() == 1, (text, loc)
            assert detail.rstrip(".") in described(page, field), (text, loc, detail,
                                                                  described(page, field))
        assert console.errors == []
    finally:
        context.close()


@pytest.mark.parametrize("original", [p.read_text() for p in EXAMPLES] + [FLOATS],
                         ids=[p.name for p in EXAMPLES] + ["floats"])
def test_examples_survive_yaml_form_yaml(site: Site, browser: Browser, original: str) -> None:
    context = browser.new_context()
    try:
        page = site.login(context, "a")
        console = Console(page)
        open_editor(site, page)
        to_form(page, original)
        expect(page.locator("#form-summary")).to_have_text("No error.", timeout=WAIT)
        assert page.locator("#wf-form [data-loc]").count() > 10
        page.click("#tab-yaml")
        on_tab(page, "yaml")
        written = page.input_value("#e-spec")
        assert written != original  # written by the form (no comments), not kept
        assert parse_workflow(written) == parse_workflow(original)
        assert repr(parse_workflow(written)) == repr(parse_workflow(original))  # 1.0 is not 1
        assert console.errors == []
    finally:
        context.close()


def test_a_workflow_edited_in_the_form_is_saved_and_runs(site: Site, browser: Browser) -> None:
    context = browser.new_context()
    try:
        page = site.login(context, "admin")
        console = Console(page)
        open_editor(site, page)
        to_form(page, GOOD)
        expect(page.locator("#form-summary")).to_have_text("No error.", timeout=WAIT)
        page.fill('[data-loc="params.who"]', "the form")
        page.fill('[data-loc="defaults.resources.cores"]', "0")  # an error, at its field
        cores = '[data-loc="defaults.resources.cores"]'
        expect(page.locator(cores)).to_have_attribute("aria-invalid", "true", timeout=WAIT)
        assert "greater than or equal to 1" in described(page, cores)
        page.fill(cores, "1")
        expect(page.locator("#form-summary")).to_have_text("No error.", timeout=WAIT)
        page.get_by_role("button", name="Add step to steps").click()  # a third step
        page.fill('[data-loc="steps[2].id"]', "third")
        page.select_option('[data-loc="steps[2]"] > .add select', "command")
        page.get_by_role("button", name="Add field to steps[2]").click()
        page.get_by_role("button", name="Add item to steps[2].command").click()
        page.fill('[data-loc="steps[2].command[0]"]', sys.executable)
        page.get_by_role("button", name="Add item to steps[2].command").click()
        page.fill('[data-loc="steps[2].command[1]"]', "-V")
        page.get_by_role("button", name="Up move steps 3 up").click()
        expect(page.locator("#form-summary")).to_have_text("No error.", timeout=WAIT)
        for width in (1280, 320):
            page.set_viewport_size({"width": width, "height": 900})
            assert axe_violations(page) == [], f"the form at {width} px"
        page.set_viewport_size({"width": 1280, "height": 900})
        page.click("#tab-yaml")
        on_tab(page, "yaml")
        spec = parse_workflow(page.input_value("#e-spec"))
        assert [s.id for s in spec.steps] == ["greet", "third", "after"]
        assert spec.step("third").command == (sys.executable, "-V")
        assert spec.params == {"who": "the form"}

        page.fill("#e-save-name", "../formed")  # hostile: refused at the field, nothing written
        page.click("#e-save")
        expect(page.locator("#e-save-status")).to_contain_text("Not saved: name: ", timeout=WAIT)
        assert page.get_attribute("#e-save-name", "aria-invalid") == "true"
        folder = site.stack.home / "workflows"
        assert not folder.exists() or list(folder.iterdir()) == []
        page.fill("#e-save-name", "formed")
        page.click("#e-save")
        expect(page.locator("#e-save-status")).to_have_text(SAVED, timeout=WAIT)
        assert parse_workflow((folder / "formed.yaml").read_text()) == spec
        page.click("#e-save")  # again: refused without the overwrite flag
        expect(page.locator("#e-save-status")).to_contain_text("exists", timeout=WAIT)
        page.check("#e-overwrite")
        page.click("#e-save")
        expect(page.locator("#e-save-status")).to_have_text(SAVED, timeout=WAIT)

        page.goto(f"{site.url}/ui/workflows/edit?file=formed")  # the saved file, launched
        assert parse_workflow(page.input_value("#e-spec")) == spec
        page.click("button[value=run]")
        page.wait_for_url(f"{site.url}/ui/runs/r-*")
        run_id = page.url.rsplit("/", 1)[1]
        run = site.wait_run("admin", run_id, "succeeded")
        assert run["workflow"] == "formed"
        log = site.api("admin", "GET", f"/v1/workflows/runs/{run_id}/log").text
        assert "hello the form" in log and "Python 3" in log
        assert refusals(console, 400, 409) == []
    finally:
        context.close()


def test_a_client_has_no_save_and_cannot_save(site: Site, browser: Browser) -> None:
    context = browser.new_context()
    try:
        page = site.login(context, "a")
        console = Console(page)
        open_editor(site, page)
        assert page.locator("#e-save").count() == 0
        status = page.evaluate("""async (spec) => (await fetch('/v1/workflows/files', {
            method: 'POST', credentials: 'same-origin',
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token':
                      document.querySelector('meta[name=csrf-token]').content},
            body: JSON.stringify({name: 'sneaky', spec})})).status""", GOOD)
        assert status == 403
        assert not (site.stack.home / "workflows" / "sneaky.yaml").exists()
        to_form(page, GOOD)
        for width in (1280, 320):
            page.set_viewport_size({"width": width, "height": 900})
            assert axe_violations(page) == [], f"the form at {width} px"
        assert refusals(console, 403) == []
    finally:
        context.close()


def test_a_run_started_from_the_form_runs_what_the_form_says(site: Site,
                                                             browser: Browser) -> None:
    """Start a run right after an edit in the form (before its check has answered): the
    YAML posted is the form's, with that edit."""
    context = browser.new_context()
    try:
        page = site.login(context, "a")
        console = Console(page)
        open_editor(site, page)
        to_form(page, GOOD)
        on_tab(page, "form")
        page.fill('[data-loc="params.who"]', "the form run")
        page.click("button[value=run]")
        page.wait_for_url(f"{site.url}/ui/runs/r-*")
        run_id = page.url.rsplit("/", 1)[1]
        run = site.wait_run("a", run_id, "succeeded")
        assert run["params"] == {"who": "the form run"}
        log = site.api("a", "GET", f"/v1/workflows/runs/{run_id}/log").text
        assert "hello the form run" in log
        assert console.errors == []
    finally:
        context.close()
