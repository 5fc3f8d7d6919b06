"""Schedules: tick times (cron in a zone across DST, intervals), catch-up policies and the
no-overlap cap, and the ``schedule:`` block's errors at their field."""

from __future__ import annotations

from datetime import UTC, datetime
from textwrap import dedent
from zoneinfo import ZoneInfo

import pytest

from bridgehead.domain.schedules import GRACE_S, Catchup, Schedule, decide, stamp
from bridgehead.workflows.spec import parse_workflow, validate_workflow

PARIS = ZoneInfo("Europe/Paris")


def at(*parts: int, tz: ZoneInfo = PARIS) -> int:
    return int(datetime(*parts, tzinfo=tz).timestamp())  # type: ignore[misc]


def local(ts: int) -> str:
    return datetime.fromtimestamp(ts, PARIS).strftime("%m-%d %H:%M%z")


def test_cron_ticks_are_wall_times_in_the_zone() -> None:
    s = Schedule(cron="0 2 * * *", timezone="Europe/Paris")
    ticks = s.next_ticks(at(2026, 1, 10, 12, 0), 2)
    assert [local(t) for t in ticks] == ["01-11 02:00+0100", "01-12 02:00+0100"]
    assert datetime.fromtimestamp(ticks[0], UTC).hour == 1  # 02:00 Paris is 01:00 UTC


def test_spring_forward_a_missing_time_fires_once_after_the_gap() -> None:
    s = Schedule(cron="30 2 * * *", timezone="Europe/Paris")
    ticks = s.next_ticks(at(2026, 3, 28, 12, 0), 2)
    assert [local(t) for t in ticks] == ["03-29 03:00+0200", "03-30 02:30+0200"]


def test_fall_back_a_repeated_time_fires_once() -> None:
    daily = Schedule(cron="30 2 * * *", timezone="Europe/Paris")
    ticks = daily.next_ticks(at(2026, 10, 24, 12, 0), 3)
    assert [local(t) for t in ticks] == ["10-25 02:30+0200", "10-26 02:30+0100",
                                         "10-27 02:30+0100"]
    # due() going backwards over the same night agrees with next_ticks going forwards
    due, older = daily.due(at(2026, 10, 24, 12, 0), at(2026, 10, 27, 3, 0), limit=10)
    assert due == ticks and not older
    # an interval counts real time: 1h fires every real hour, 25 of them that day
    hourly = Schedule(every_s=3600)
    day = hourly.due(at(2026, 10, 25, 0, 0) - 1, at(2026, 10, 26, 0, 0) - 1, limit=100)[0]
    assert len(day) == 25


def test_intervals_are_aligned_to_the_epoch() -> None:
    s = Schedule(every_s=900)
    start = at(2026, 1, 1, 10, 7, tz=ZoneInfo("UTC"))
    assert [stamp(t) for t in s.next_ticks(start, 3)] == [
        "2026-01-01T10:15:00Z", "2026-01-01T10:30:00Z", "2026-01-01T10:45:00Z"]
    assert s.next_ticks(at(2026, 1, 1, 10, 15, tz=ZoneInfo("UTC")), 1) == [
        at(2026, 1, 1, 10, 30, tz=ZoneInfo("UTC"))]  # strictly after


def test_due_is_bounded_and_says_when_older_ticks_were_left_out() -> None:
    s = Schedule(every_s=60)
    assert s.due(0, 59, limit=5) == ([], False)
    assert s.due(0, 60, limit=5) == ([60], False)
    assert s.due(60, 600, limit=3) == ([480, 540, 600], True)
    cron = Schedule(cron="* * * * *")
    assert cron.due(60, 600, limit=3) == ([480, 540, 600], True)
    assert cron.due(0, 10**9, limit=1)[0] == [10**9 // 60 * 60]  # a long outage is cheap


@pytest.mark.parametrize(("catchup", "start", "skipped"), [
    (Catchup.NONE, [], [100, 200, 300]),
    (Catchup.LATEST, [300], [100, 200]),
    (Catchup.ALL, [200], [100]),  # max_catchup 2: the two newest wait, the oldest starts
])
def test_catchup_policies(catchup: Catchup, start: list[int], skipped: list[int]) -> None:
    s = Schedule(every_s=100, catchup=catchup, max_catchup=2)
    d = decide(s, [300, 100, 200], now=300 + GRACE_S + 1, active=0)
    assert d.start == start
    assert sorted(t for t, _ in d.skip) == skipped


def test_none_still_starts_a_tick_within_grace() -> None:
    s = Schedule(every_s=100, catchup=Catchup.NONE)
    assert decide(s, [100, 200], now=200 + GRACE_S - 1, active=0).start == [200]


def test_max_active_runs_makes_ticks_wait_not_overlap() -> None:
    s = Schedule(every_s=100, catchup=Catchup.ALL, max_catchup=5)
    busy = decide(s, [100, 200], now=250, active=1)
    assert busy.start == [] and busy.skip == []  # they wait for the running run to end
    free = decide(s, [100, 200], now=250, active=0)
    assert free.start == [100]  # one at a time, oldest first
    two = Schedule(every_s=100, catchup=Catchup.ALL, max_active_runs=2)
    assert decide(two, [100, 200, 300], now=300, active=0).start == [100, 200]


HEAD = dedent("""\
    name: nightly
    params: {day: today}
    defaults: {cluster: local}
    steps:
      - id: a
        command: [echo, "{{ params.day }}"]
    """)


def test_schedule_block_parses() -> None:
    spec = parse_workflow(HEAD + dedent("""\
        schedule:
          cron: "0 2 * * *"
          timezone: Europe/Paris
          catchup: all
          max_catchup: 3
          max_active_runs: 2
          params: {day: yesterday}
          paused: true
        """))
    assert spec.schedule == Schedule(cron="0 2 * * *", timezone="Europe/Paris",
                                     catchup=Catchup.ALL, max_catchup=3, max_active_runs=2,
                                     params={"day": "yesterday"}, paused=True)
    every = parse_workflow(HEAD + "schedule: {every: 15m}\n").schedule
    assert every is not None and every.every_s == 900 and every.catchup is Catchup.LATEST


@pytest.mark.parametrize(("block", "message"), [
    ("{cron: '0 2 * *'}", "schedule.cron: '0 2 * *' is not a cron expression: give five "
     "fields (minute hour day month weekday)"),
    ("{cron: '61 * * * *'}", "schedule.cron: '61 * * * *' is not a cron expression"),
    ("{cron: '0 2 * * *', timezone: Mars/Olympus}", "schedule.timezone: 'Mars/Olympus' is "
     "not a known time zone"),
    ("{every: soon}", "schedule.every: 'soon' is not an interval"),
    ("{every: 15m, params: {nope: 1}}", "schedule.params.nope: the workflow has no param "
     "'nope' (it has: day)"),
    ("{}", "schedule: give cron (an expression) or every (an interval)"),
    ("{cron: '0 2 * * *', every: 1h}", "schedule: give cron or every, not both"),
    ("{every: 15m, catchup: some}", "schedule.catchup: Input should be 'none', 'latest' or "
     "'all'"),
    ("{every: 15m, max_catchup: 1000}", "schedule.max_catchup: Input should be less than or "
     "equal to 100"),
    ("{every: 15m, max_active_runs: 0}", "schedule.max_active_runs: Input should be greater "
     "than or equal to 1"),
    ("{every: 15m, at: noon}", "schedule.at: Extra inputs are not permitted"),
    ("{every: 15m, tenant: 'a b'}", "schedule.tenant: String should match pattern"),
])
def test_bad_schedules_are_refused_at_their_field(block: str, message: str) -> None:
    text = HEAD + f"schedule: {block}\n"
    problems = validate_workflow(text, "f.yaml")
    assert len(problems) == 1, problems
    assert problems[0].message("f.yaml").startswith(f"f.yaml:7: {message}"), problems
    with pytest.raises(Exception, match="^f.yaml:7: " + message.split(":")[0]):
        parse_workflow(text, "f.yaml")
