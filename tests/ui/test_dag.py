"""The run page's DAG, drawn by the server as inline SVG: read back from the page in real
Chromium (with and without JavaScript), its nodes, states and edges are the run's; a
60-step workflow's nodes never overlap; no console error, no axe violation at 1280/320 px."""

from __future__ import annotations

import json
from itertools import combinations
from typing import Any

from playwright.sync_api import Browser, Page

from tests.ui.conftest import PY, Console, Site, axe_violations

FAIL_ITEM_1 = "import sys; sys.exit(1 if sys.argv[1] == '1' else 0)"
DIAMOND = ("name: wf-diamond\n"
           "defaults: {cluster: local, resources: {cores: 1, walltime: 5m}}\n"
           "steps:\n"
           f"  - {{id: start, command: [{PY}, -c, 'pass']}}\n"
           f"  - {{id: left, needs: [start], command: [{PY}, -c, 'pass']}}\n"
           "  - id: right\n"
           "    needs: [start]\n"
           "    foreach: {range: [0, 3]}\n"
           f"    command: [{PY}, -c, {json.dumps(FAIL_ITEM_1)}, '{{{{ item }}}}']\n"
           f"  - {{id: join, needs: [left, right], command: [{PY}, -c, 'pass']}}\n")
"""A diamond (start -> left, right -> join) whose right side fans out 3 ways, one failing."""


def big_workflow() -> tuple[str, dict[str, list[str]]]:
    """60 steps: a root (that sleeps: nothing else runs) and 5 layers of 11, each step
    needing two of the layer above, the last layer also needing the root (long edges)."""
    needs: dict[str, list[str]] = {"root": []}
    above = ["root"]
    for layer in range(1, 6):
        row = [f"s{layer}-{i:02d}-with-a-long-step-name" for i in range(11)]
        for i, step in enumerate(row):
            needs[step] = sorted({above[i % len(above)], above[(i * 7 + 3) % len(above)]})
            if layer == 5:
                needs[step] = sorted({*needs[step], "root"})
        above = row
    needs["tail"] = [above[0], above[-1]]
    lines = ["name: wf-big", "defaults: {cluster: local, resources: {cores: 1, walltime: 5m}}",
             "steps:", f"  - {{id: root, command: [{PY}, -c, 'import time; time.sleep(300)']}}"]
    lines += [f"  - {{id: {s}, needs: [{', '.join(n)}], command: [{PY}, -c, 'pass']}}"
              for s, n in needs.items() if s != "root"]
    assert len(needs) == 57
    for extra in ("x1", "x2", "x3"):  # three more roots' dependents, to make 60
        needs[extra] = ["root"]
        lines.append(f"  - {{id: {extra}, needs: [root], command: [{PY}, -c, 'pass']}}")
    return "\n".join(lines) + "\n", needs


def drawing(page: Page) -> tuple[dict[str, dict[str, Any]], set[tuple[str, str]], dict[str, int]]:
    """The nodes (by step: state, box, text), the edges and the size of the page's DAG."""
    nodes = page.eval_on_selector_all("svg.dag a.node", """els => els.map(a => ({
        step: a.dataset.step, state: a.dataset.state, href: a.getAttribute('href'),
        label: a.getAttribute('aria-label'),
        text: [...a.querySelectorAll('text')].map(t => t.textContent),
        x: +a.querySelector('rect').getAttribute('x'),
        y: +a.querySelector('rect').getAttribute('y'),
        w: +a.querySelector('rect').getAttribute('width'),
        h: +a.querySelector('rect').getAttribute('height'),
        fits: [...a.querySelectorAll('text')].every(t => {  // as the browser laid it out
            const b = t.getBBox(), r = a.querySelector('rect').getBBox();
            return b.x >= r.x && b.x + b.width <= r.x + r.width
                && b.y >= r.y && b.y + b.height <= r.y + r.height; })}))""")
    edges = page.eval_on_selector_all("svg.dag path.edge",
                                      "els => els.map(p => [p.dataset.from, p.dataset.to])")
    size = page.eval_on_selector("svg.dag", "s => ({w: +s.getAttribute('width'), "
                                 "h: +s.getAttribute('height')})")
    return {n["step"]: n for n in nodes}, {(a, b) for a, b in edges}, size


def check_page(site: Site, browser: Browser, path: str, check: Any) -> None:
    """``check(page)`` at 1280 and 320 px with JavaScript on (no console error, no axe
    violation), then with it off."""
    for js in (True, False):
        context = browser.new_context(java_script_enabled=js)
        try:
            page = site.login(context, "a")
            console = Console(page)
            for width in (1280, 320) if js else (1280,):
                page.set_viewport_size({"width": width, "height": 900})
                page.goto(f"{site.url}{path}")
                check(page)
                if js:
                    assert axe_violations(page) == [], f"at {width} px"
            assert console.errors == []
        finally:
            context.close()


def test_diamond_with_a_fan_out_is_drawn_as_the_run_is(site: Site, browser: Browser) -> None:
    run_id = site.start_run("a", "a", DIAMOND)
    run = site.wait_run("a", run_id, "failed")
    states = {s["id"]: s["state"] for s in run["steps"]}
    assert states["right"] == "failed"

    def check(page: Page) -> None:
        nodes, edges, size = drawing(page)
        assert set(nodes) == {"start", "left", "right", "join"}
        assert edges == {("start", "left"), ("start", "right"), ("left", "join"),
                         ("right", "join")}
        assert {s: n["state"] for s, n in nodes.items()} == states
        assert nodes["right"]["text"] == ["right", "failed · x 3", "2 succeeded", "1 failed"]
        assert nodes["left"]["text"] == ["left", "succeeded"]  # one task: no "x N"
        assert "failed, 3 tasks: 2 succeeded, 1 failed; needs start" in nodes["right"]["label"]
        # layers by longest path, the join centred under the two sides
        assert nodes["start"]["y"] < nodes["left"]["y"] == nodes["right"]["y"] < nodes["join"]["y"]
        centre = {s: n["x"] + n["w"] / 2 for s, n in nodes.items()}
        assert centre["join"] == centre["start"] == (centre["left"] + centre["right"]) / 2
        for n in nodes.values():
            assert n["x"] >= 0 and n["y"] >= 0
            assert n["x"] + n["w"] <= size["w"] and n["y"] + n["h"] <= size["h"]
            assert n["href"] == f"#step-{n['step']}" and n["fits"], n
            assert page.locator(f"#step-{n['step']} h3").count() == 1  # the link's target
        page.click("svg.dag a.node[data-step=right]")
        assert page.url.endswith("#step-right")

    check_page(site, browser, f"/ui/runs/{run_id}", check)


def test_sixty_steps_are_drawn_without_overlap(site: Site, browser: Browser) -> None:
    spec, needs = big_workflow()
    assert len(needs) == 60
    run_id = site.start_run("a", "a", spec)
    try:
        site.wait_run("a", run_id, "running")

        def check(page: Page) -> None:
            nodes, edges, size = drawing(page)
            assert set(nodes) == set(needs)
            assert edges == {(n, s) for s, wanted in needs.items() for n in wanted}
            for a, b in combinations(nodes.values(), 2):
                apart = (a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
                         or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"])
                assert apart, (a["step"], b["step"])
            for s, wanted in needs.items():  # every step below each step it needs
                assert all(nodes[n]["y"] + nodes[n]["h"] < nodes[s]["y"] for n in wanted), s
            for n in nodes.values():
                assert n["x"] + n["w"] <= size["w"] and n["y"] + n["h"] <= size["h"]
                assert n["text"][0] == n["step"] or n["text"][0].endswith("…")
                assert len(n["text"][0]) <= 22 and n["fits"], n
            # the drawing keeps its size (the box scrolls): text stays readable at 320 px
            box = page.locator("svg.dag").bounding_box()
            assert box is not None and box["width"] == size["w"]

        check_page(site, browser, f"/ui/runs/{run_id}", check)
    finally:
        site.api("a", "POST", f"/v1/workflows/runs/{run_id}/cancel")
