"""The web console's pure parts: password hashes, users and roles, who a request is, CSRF tokens, query
parameters and cursors, schedules in words and clock-change notes, versions with their changes."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from scheduler.errors import ConfigError, InvalidField
from scheduler.rules.schedules import fire_times, parse_schedule
from scheduler.rules.timing import clock_change_notes
from scheduler.rules.versions import TaskVersion
from web.actions import pause_end, run_data, whole_number
from web.auth import Authenticator, User, hash_password, parse_users, verify_password
from web.describe import schedule_in_words, short_time
from web.queries import BadQuery, decode_cursor, encode_cursor, parse_tasks_query
from web.security import CsrfTokens
from web.views import versions_view

HASH = hash_password("s3cret pass")


def basic(credentials: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def test_a_password_hash_verifies_only_its_password_and_never_a_malformed_hash() -> None:
    assert HASH.startswith("scrypt$16384$8$1$") and "s3cret" not in HASH
    assert verify_password("s3cret pass", HASH)
    assert not verify_password("s3cret pas", HASH)
    assert hash_password("s3cret pass") != HASH  # salted
    for broken in ("", "scrypt$1$2", HASH.replace("scrypt", "md5"), HASH[:-2] + "zz", "scrypt$x$8$1$00$00"):
        assert not verify_password("s3cret pass", broken), broken


def test_users_parse_into_roles_and_a_malformed_entry_is_a_config_error() -> None:
    accounts = parse_users(f"ana:viewer:{HASH}, olu:operator:{HASH},root:admin:")
    assert {name: account.user.role for name, account in accounts.items()} == {
        "ana": "viewer", "olu": "operator", "root": "admin",
    }  # fmt: skip
    assert parse_users(None) == {} and parse_users("  ") == {}
    for bad in ("ana", "ana:viewer", "ana:root:" + HASH, ":viewer:" + HASH, "ana:viewer:plaintext",
                "a na:viewer:", "x" * 101 + ":viewer:", "ana\x07:viewer:"):  # fmt: skip
        with pytest.raises(ConfigError, match="web_users"):
            parse_users(bad)


def test_roles_allow_what_the_postgresql_roles_allow() -> None:
    allowed = {
        role: {
            action for action in ("read", "run", "pause", "resume", "delete") if User("u", role).may(action)
        }
        for role in ("viewer", "operator", "admin")
    }  # type: ignore[arg-type]
    assert allowed == {
        "viewer": {"read"},
        "operator": {"read", "run", "pause", "resume"},
        "admin": {"read", "run", "pause", "resume", "delete"},
    }


def test_only_operators_and_admins_skip() -> None:
    assert [User("u", role).may("skip") for role in ("viewer", "operator", "admin")] == [False, True, True]


def test_a_pause_end_without_an_offset_is_utc_and_run_data_is_parsed_json() -> None:
    assert pause_end("2031-01-02T03:04") == datetime(2031, 1, 2, 3, 4, tzinfo=UTC)
    assert pause_end(" 2031-01-02T04:04+01:00 ") == datetime(2031, 1, 2, 3, 4, tzinfo=UTC)
    assert pause_end("  ") is None and run_data("") is None
    assert run_data('{"a": [1]}') == {"a": [1]} and run_data("[1]") == [1]  # the service refuses a list
    for bad in (
        lambda: pause_end("next tuesday"),
        lambda: run_data("{a"),
        lambda: whole_number("count", "-1"),
    ):
        with pytest.raises(InvalidField):
            bad()


def test_basic_auth_identifies_a_user_by_password_and_nobody_else() -> None:
    auth = Authenticator(parse_users(f"ana:viewer:{HASH},root:admin:"))
    assert auth.identify(basic("ana:s3cret pass")) == User("ana", "viewer")
    assert auth.identify(basic("ana:s3cret pass")) == User("ana", "viewer")  # cached, same answer
    assert auth.identify(basic("ana:wrong")) is None
    assert auth.identify(basic("root:")) is None  # no hash: no password login
    assert auth.identify(basic("nobody:s3cret pass")) is None
    assert auth.identify({"authorization": "Basic !!!"}) is None
    assert auth.identify({"authorization": "Bearer x"}) is None
    assert auth.identify({}) is None
    assert auth.identify({"x-forwarded-user": "ana"}) is None  # the header counts only when switched on


def test_the_trusted_header_names_a_listed_user_and_basic_auth_is_then_ignored() -> None:
    auth = Authenticator(parse_users(f"ana:viewer:,root:admin:{HASH}"), trusted_header="X-Forwarded-User")
    assert auth.identify({"x-forwarded-user": "ana"}) == User("ana", "viewer")
    assert auth.identify({"x-forwarded-user": "mallory"}) is None
    assert auth.identify(basic("root:s3cret pass")) is None


def test_csrf_tokens_belong_to_one_user_and_one_key() -> None:
    tokens = CsrfTokens("key-1")
    assert tokens.valid("ana", tokens.token("ana"))
    assert not tokens.valid("olu", tokens.token("ana"))
    assert not tokens.valid("ana", None) and not tokens.valid("ana", "")
    assert CsrfTokens("key-1").token("ana") == tokens.token("ana")  # replicas with one key agree
    assert not CsrfTokens("key-2").valid("ana", tokens.token("ana"))
    assert CsrfTokens(None).token("ana") != CsrfTokens(None).token("ana")  # random per process


def test_tasks_query_parameters_are_checked_and_bounded() -> None:
    query = parse_tasks_query(
        {"status": "paused", "queue": "q1", "q": " nightly ", "sort": "name", "order": "desc"}
    )
    assert (query.where.status, query.where.queue, query.where.text) == ("paused", "q1", "nightly")
    assert (query.sort, query.descending, query.limit) == ("name", True, 50)
    for bad in ({"limit": "0"}, {"limit": "201"}, {"limit": "1e3"}, {"status": "gone"}, {"sort": "secret"},
                {"order": "up"}, {"q": "x" * 201}, {"q": "a\x00"}, {"after": "%%%"}):  # fmt: skip
        with pytest.raises(BadQuery):
            parse_tasks_query(bad)


def test_cursors_round_trip_and_belong_to_their_sort() -> None:
    at = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert decode_cursor(encode_cursor("next_run_at", at, 7), "next_run_at") == (at, 7)
    assert decode_cursor(encode_cursor("name", "b-task", 3), "name") == ("b-task", 3)
    assert decode_cursor(encode_cursor("id", 9, 9), "id") == (9, 9)
    with pytest.raises(BadQuery, match="sort changed"):
        decode_cursor(encode_cursor("name", "b", 3), "id")
    for garbage in ("", "e30", base64.urlsafe_b64encode(b'["id", 1, true]').decode(), "WyJuYW1lIiwxLDFd"):
        with pytest.raises(BadQuery):
            decode_cursor(garbage, "name")


@pytest.mark.parametrize(
    ("kind", "schedule", "words"),
    [
        ("cron", "* * * * *", "every minute"),
        ("cron", "*/5 * * * *", "every 5 minutes"),
        ("cron", "7 * * * *", "every hour at minute 7"),
        ("cron", "30 2 * * *", "every day at 02:30"),
        ("cron", "@daily", "every day at 00:00"),
        ("cron", "0 9 * * 1", "every Monday at 09:00"),
        ("cron", "0 9 * * 1-5", "weekdays at 09:00"),
        ("cron", "0 9 1 * *", "0 9 1 * *"),  # not one we put in words: the raw text
        ("interval", "every 90s", "every 90s"),
        ("interval", "5m", "every 5m"),
        ("manual", "manual", "only when run by hand"),
    ],
)
def test_schedules_in_words(kind: str, schedule: str, words: str) -> None:
    assert schedule_in_words(kind, schedule) == words


def test_clock_change_notes_mark_the_first_run_after_a_dst_change() -> None:
    zone = ZoneInfo("Europe/Berlin")
    schedule = parse_schedule("30 2 * * *", timezone="Europe/Berlin", anchor=datetime(2027, 3, 1, tzinfo=UTC))
    times = fire_times(schedule, datetime(2027, 3, 26, tzinfo=UTC), 4)
    notes = clock_change_notes(times, zone)
    # 2027-03-28 02:30 does not exist in Berlin (spring forward): cronie runs it at 03:00 CEST.
    assert notes == [None, None, "clock change before this run: CET -> CEST", None]
    assert clock_change_notes([], zone) == []


def test_short_time() -> None:
    assert short_time("2026-12-07T05:16:55.101769Z") == "2026-12-07 05:16:55 UTC"
    assert short_time("2026-12-07T05:16:55Z") == "2026-12-07 05:16:55 UTC"
    assert short_time(None) == ""


def test_events_of_an_execution_wake_its_live_tails_and_no_other() -> None:
    import asyncio
    import threading
    from collections.abc import Iterator
    from typing import Any

    from web.live import Wakeups

    released = threading.Event()

    def source(stop: threading.Event) -> Iterator[dict[str, Any]]:
        released.wait(5)
        yield {"event": "task-paused", "task": {"id": 42}}  # not an execution's event
        yield {"event": "task-event", "type": "completed", "execution": {"id": 7}}
        yield {"event": "task-event", "type": "completed", "execution": {"id": 42}}
        stop.wait(5)

    async def scenario() -> tuple[bool, bool]:
        wakeups = Wakeups()
        with wakeups.watch(42) as mine, wakeups.watch(43) as other:
            wakeups.follow(source)
            released.set()
            await asyncio.wait_for(mine.wait(), 5)
            await asyncio.sleep(0.05)
            woken = (mine.is_set(), other.is_set())
        wakeups.close()
        return woken

    assert asyncio.run(scenario()) == (True, False)


def test_versions_newest_first_with_changes_from_the_one_before_and_secrets_redacted() -> None:
    at = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    first = {"name": "t", "schedule": "0 3 * * *", "data": {"password": "p1"}, "status": "active"}
    # An audit row written unredacted (never expected, but a page must not show it even then).
    second = first | {"schedule": "0 9 * * *", "data": {"password": "p2", "n": 1}}
    third = second | {"status": "paused"}
    made = [("create", first), ("update", second), ("pause", third)]
    rows = [TaskVersion(i + 1, 10 + i, at, "ana", action, task) for i, (action, task) in enumerate(made)]
    shown = versions_view(rows)
    assert [(v["version"], v["action"], v["latest"]) for v in shown] == [
        (3, "pause", True), (2, "update", False), (1, "create", False)
    ]  # fmt: skip
    assert shown[0]["changes"] == [{"field": "status", "before": "active", "after": "paused"}]
    assert shown[1]["changes"] == [
        {"field": "schedule", "before": "0 3 * * *", "after": "0 9 * * *"},
        {"field": "data", "before": {"password": "***"}, "after": {"password": "***", "n": 1}},
    ]
    assert shown[2]["changes"] == [] and shown[2]["at"] == "2026-12-07T06:00:00Z"
    assert "p1" not in repr(shown) and "p2" not in repr(shown)
    assert versions_view([]) == []
