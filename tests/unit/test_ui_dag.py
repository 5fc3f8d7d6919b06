"""The run page's DAG layout (``bridgehead.server.ui.dag``) without a browser: layers by
longest path, order within a layer by barycentre (ties in file order), the same drawing for
the same steps, and no drawing past MAX_STEPS."""

from __future__ import annotations

from typing import Any

from bridgehead.server.ui.dag import MAX_STEPS, layers, layout


def step(step_id: str, *needs: str, total: int = 1, **counts: int) -> dict[str, Any]:
    return {"id": step_id, "needs": list(needs), "state": "waiting", "total": total,
            "counts": counts}


def test_layers_are_longest_paths_whatever_the_file_order() -> None:
    steps = [step("d", "b", "c"), step("c", "a"), step("b", "a", "c"), step("a")]
    assert layers(steps) == {"a": 0, "c": 1, "b": 2, "d": 3}


def test_a_layer_is_ordered_by_the_barycentre_of_what_it_needs() -> None:
    # file order puts x (under a2) before y (under a1): the barycentre uncrosses them
    steps = [step("a1"), step("a2"), step("x", "a2"), step("y", "a1"), step("z", "a1", "a2")]
    dag = layout(steps)
    assert dag is not None
    x = {n.id: n.x for n in dag.nodes}
    assert x["a1"] < x["a2"]
    assert x["y"] < x["z"] < x["x"]
    assert layout(steps) == dag  # deterministic


def test_fan_out_says_x_n_and_its_counts_by_state() -> None:
    fan = {**step("fan", total=5, succeeded=3, failed=2), "state": "failed"}
    dag = layout([fan])
    assert dag is not None
    assert dag.nodes[0].lines == ("failed · x 5", "3 succeeded", "2 failed")
    assert dag.nodes[0].label == "step fan: failed, 5 tasks: 3 succeeded, 2 failed"


def test_too_many_steps_are_not_drawn_and_a_long_chain_is() -> None:
    chain = [step("s0")] + [step(f"s{i}", f"s{i - 1}") for i in range(1, MAX_STEPS)]
    dag = layout(list(reversed(chain)))  # the worst file order for the layering
    assert dag is not None and len({n.y for n in dag.nodes}) == MAX_STEPS
    assert layout([*chain, step("one-more")]) is None
