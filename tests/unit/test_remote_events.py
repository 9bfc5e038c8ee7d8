"""The event path of a worker: EventBus (redacts once, calls handlers in order), redaction, the ``at`` stamp,
and RedisEventPublisher (batches to Redis, one message per event, same JSON as ever, plain commands when
Redis refuses scripts)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pytest
import redis

from scheduler.errors import ConfigError
from scheduler.observability.events import TASK_CREATED, TASK_EVENT, EventBus
from scheduler.records import iso_utc
from scheduler.redaction import REDACTED, is_secret_key, redact
from scheduler.settings import load_settings
from workers import remote_events
from workers.remote_events import (
    RECENT_MAX,
    RECENT_SUFFIX,
    RedisEventPublisher,
    channel_for,
    events_channel,
    forward,
    now_text,
    to_text,
)


def reference_redact(data: Any) -> Any:
    """The plain definition that :func:`redact` must agree with."""
    if isinstance(data, Mapping):
        return {key: REDACTED if is_secret_key(key) else reference_redact(item) for key, item in data.items()}
    if isinstance(data, list | tuple):
        return [reference_redact(item) for item in data]
    return data


class Key(str):
    pass


def execution(number: int, status: str, **extra: Any) -> dict[str, Any]:
    """Shaped like scheduler.execution.outcomes.execution_json."""
    return {
        "id": number, "task_id": 7, "task_name": "noop", "command": "test:noop", "trigger": "schedule",
        "queue": "default", "worker": "host:1", "attempt": 1, "max_attempts": 3, "status": status, **extra,
    }  # fmt: skip


def test_redact_agrees_with_its_definition_on_every_kind_of_value() -> None:
    data = {
        "plain": 1, "ratio": 0.5, "flag": True, "none": None, "text": "x",
        Key("Api_Token"): "s1", 3: {"password": "s2"}, ("a", "b"): "tuple key",
        "proxy": MappingProxyType({"secret": "s3", "ok": [1, ("t", {"auth": "s4"})]}),
        "nested": [[{"credential": "s5"}], ({"keep": {"PASSWD": "s6"}},)],
        "object": datetime(2030, 1, 1, tzinfo=UTC),
    }  # fmt: skip
    before = repr(data)
    out = redact(data)
    assert out == reference_redact(data)
    assert out[Key("Api_Token")] == REDACTED and out[3] == {"password": REDACTED}
    assert out["proxy"] == {"secret": REDACTED, "ok": [1, ["t", {"auth": REDACTED}]]}
    assert type(out["proxy"]) is dict and out["object"] is data["object"]
    assert "s1" not in repr(out) and "s6" not in repr(out)
    assert repr(data) == before


def test_the_bus_redacts_each_payload_once_and_calls_handlers_in_order() -> None:
    bus = EventBus()
    heard: list[tuple[str, dict[str, Any]]] = []
    bus.on(TASK_EVENT, lambda payload: heard.append(("first", payload)))
    bus.on(TASK_EVENT, lambda payload: heard.append(("second", payload)))
    bus.on(TASK_CREATED, lambda payload: heard.append(("created", payload)))
    payload = {"type": "completed", "execution": execution(1, "completed", result={"token": "t", "n": 1})}

    bus.emit(TASK_EVENT, payload)

    assert [name for name, _ in heard] == ["first", "second"]
    assert heard[0][1] is heard[1][1]  # one copy for all handlers
    assert heard[0][1]["execution"]["result"] == {"token": REDACTED, "n": 1}
    assert payload["execution"]["result"]["token"] == "t"  # the emitter's payload is left alone
    bus.emit("not-an-event", payload)  # nobody listens: nothing happens
    with pytest.raises(ValueError, match="unknown event"):
        bus.on("not-an-event", print)


def test_a_bus_without_handlers_emits_nothing_and_imports_no_blinker() -> None:
    script = (
        "import sys; from scheduler.observability.events import TASK_CREATED, EventBus; bus = EventBus(); "
        "bus.emit(TASK_CREATED, {'task': {}}); print('blinker' in sys.modules); "
        "heard = []; bus.on(TASK_CREATED, heard.append); bus.emit(TASK_CREATED, {'task': {}}); "
        "print('blinker' in sys.modules, heard)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["False", "True [{'task': {}}]"], done.stdout + done.stderr


def test_a_failing_handler_stops_the_emit_like_before() -> None:
    bus = EventBus()
    heard: list[dict[str, Any]] = []

    def broken(payload: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    bus.on(TASK_EVENT, broken)
    bus.on(TASK_EVENT, heard.append)
    with pytest.raises(RuntimeError, match="handler bug"):
        bus.emit(TASK_EVENT, {"type": "executed"})
    assert heard == []


def test_the_stamp_is_written_like_iso_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    before = datetime.now(UTC)
    stamp = now_text()
    assert before <= datetime.fromisoformat(stamp.replace("Z", "+00:00")) <= datetime.now(UTC)
    for micro in (0, 1, 999_999, 120_000):
        instant = datetime(2030, 6, 12, 10, 35, 0, micro, tzinfo=UTC)
        nanos = (int(instant.replace(microsecond=0).timestamp()) * 1_000_000 + micro) * 1000
        monkeypatch.setattr(time, "time_ns", lambda nanos=nanos: nanos + 999)
        assert now_text() == iso_utc(instant)


@pytest.mark.parametrize(
    ("url", "channel"),
    [
        ("redis://127.0.0.1:6379/13", "systemprompt:events:13"),
        ("redis://127.0.0.1:6379", "systemprompt:events:0"),
        ("rediss://user:pw@redis.example:6380/2", "systemprompt:events:2"),
        ("redis://127.0.0.1:6379?db=4", "systemprompt:events:4"),
        ("unix:///run/redis.sock?db=7", "systemprompt:events:7"),
    ],
)
def test_the_channel_is_named_after_the_broker_database_number(url: str, channel: str) -> None:
    assert channel_for(url, "systemprompt") == channel


def test_the_channel_of_a_deployment_takes_its_prefix_from_the_events_prefix_setting() -> None:
    broker = {"SCHEDULER_BROKER_URL": "redis://127.0.0.1:6379/5"}
    assert events_channel(load_settings(broker).settings) == "systemprompt:events:5"
    prefixed = {**broker, "SCHEDULER_EVENTS_PREFIX": "billing"}
    assert events_channel(load_settings(prefixed).settings) == "billing:events:5"
    for bad in ("", "two words"):
        with pytest.raises(ConfigError, match="events_prefix"):
            load_settings({**broker, "SCHEDULER_EVENTS_PREFIX": bad})


# ------------------------------------------------------------------------------------------------ on Redis


class Tap:
    """Every message on ``channel`` while the test runs."""

    def __init__(self, url: str, channel: str) -> None:
        self.messages: list[str] = []
        self._client = redis.Redis.from_url(url)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self._pubsub.subscribe(channel)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.1)
            if message is not None:
                self.messages.append(message["data"].decode())

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.messages)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()
        self._client.close()


@pytest.fixture
def channel(redis_url: str) -> Iterator[str]:
    name = f"test-events:{uuid.uuid4().hex}"
    yield name
    redis.Redis.from_url(redis_url).delete(name + RECENT_SUFFIX)


@pytest.mark.redis
def test_forwarded_events_reach_the_channel_and_the_recent_list_one_message_each_in_order(
    redis_url: str, channel: str
) -> None:
    bus = EventBus()
    publisher = RedisEventPublisher(redis_url, channel=channel)
    forward(bus, publisher)
    tap = Tap(redis_url, channel)
    count = RECENT_MAX + 200
    try:
        for number in range(count // 2):
            bus.emit(TASK_EVENT, {"type": "executed", "execution": execution(number, "running")})
            done = execution(number, "completed", result={"api_key": f"hidden-{number}", "n": number})
            bus.emit(TASK_EVENT, {"type": "completed", "execution": done})
            if number % 100 == 0:
                time.sleep(0.01)  # several rounds, not one
        publisher.flush(timeout_s=10)
        texts = tap.wait_for(count)
    finally:
        tap.close()

    assert len(texts) == count
    messages = [json.loads(text) for text in texts]
    assert [(m["type"], m["execution"]["id"]) for m in messages] == [
        (kind, number) for number in range(count // 2) for kind in ("executed", "completed")
    ]
    completed = messages[-1]
    assert list(completed) == ["event", "at", "type", "execution"]
    assert completed["event"] == TASK_EVENT and completed["at"].endswith("Z")
    assert completed["execution"]["result"] == {"api_key": REDACTED, "n": count // 2 - 1}
    assert not any("hidden-" in text for text in texts)
    # The JSON is what to_text makes of the message, compact.
    assert texts[-1] == to_text(completed)
    recent = redis.Redis.from_url(redis_url).lrange(channel + RECENT_SUFFIX, 0, -1)
    assert [raw.decode() for raw in recent] == texts[::-1][:RECENT_MAX]


@pytest.mark.redis
def test_publish_redacts_what_it_is_given_and_flush_waits_for_it(redis_url: str, channel: str) -> None:
    publisher = RedisEventPublisher(redis_url, channel=channel)
    payload = {"task": {"name": "t", "data": {"password": "p-1", "region": "eu"}}}
    publisher.publish("task-created", payload)
    payload["task"]["data"]["region"] = "changed after publish"
    publisher.flush()
    (raw,) = redis.Redis.from_url(redis_url).lrange(channel + RECENT_SUFFIX, 0, -1)
    message = json.loads(raw)
    assert list(message) == ["event", "at", "task"]
    assert message["task"]["data"] == {"password": REDACTED, "region": "eu"}


@pytest.mark.redis
def test_when_redis_refuses_the_script_plain_commands_send_the_same_messages(
    redis_url: str, channel: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(remote_events, "_SEND_SCRIPT", "return redis.call('NOSUCHCOMMAND')")
    bus = EventBus()
    publisher = RedisEventPublisher(redis_url, channel=channel)
    forward(bus, publisher)
    tap = Tap(redis_url, channel)
    try:
        with caplog.at_level(logging.WARNING, logger="workers.remote_events"):
            for number in range(3):
                bus.emit(TASK_EVENT, {"type": "executed", "execution": execution(number, "running")})
                publisher.flush()
        texts = tap.wait_for(3)
    finally:
        tap.close()
    assert [json.loads(text)["execution"]["id"] for text in texts] == [0, 1, 2]
    recent = redis.Redis.from_url(redis_url).lrange(channel + RECENT_SUFFIX, 0, -1)
    assert [raw.decode() for raw in recent] == texts[::-1]
    assert any("with a script" in r.getMessage() for r in caplog.records)
    assert not publisher._scripted


def test_an_unreachable_redis_neither_blocks_nor_fails_the_emitter(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    publisher = RedisEventPublisher("redis://127.0.0.1:1/0", channel=f"test-events:{uuid.uuid4().hex}")
    forward(bus, publisher)
    with caplog.at_level(logging.WARNING, logger="workers.remote_events"):
        started = time.monotonic()
        bus.emit(TASK_EVENT, {"type": "executed", "execution": execution(1, "running")})
        assert time.monotonic() - started < 0.5
        publisher.flush(timeout_s=5)
    assert any("cannot publish 1 events" in r.getMessage() for r in caplog.records)
