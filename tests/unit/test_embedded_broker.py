"""The embedded broker (kombu's filesystem transport made atomic, ``workers.filesystem_transport``) through
kombu's public API on real folders: publishers in several processes, a consumer reading at the same time,
files that are no message."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from kombu import Connection

from scheduler.settings import Settings
from workers.celery_config import build_config
from workers.embedded import broker_folders, prune

PUBLISHERS = 4
PER_PUBLISHER = 500
FILLER = "x" * 16 * 1024  # a large body: writing it takes long enough for a reader to catch a file half-done


def embedded_connection(home: Path) -> Any:
    """A kombu connection exactly as the app makes it for the embedded default under ``home``."""
    config = build_config(Settings(home=home))
    return Connection(
        config["broker_url"],
        transport=config.get("broker_transport"),
        transport_options=config["broker_transport_options"],
    )


def publish_many(home: Path, publisher: int, count: int) -> None:
    with embedded_connection(home) as connection:
        simple = connection.SimpleQueue("default")
        for n in range(count):
            simple.put({"id": f"{publisher}-{n}", "filler": FILLER}, serializer="json")
        simple.close()


def test_a_consumer_never_sees_a_half_written_message_while_processes_publish(tmp_path: Path) -> None:
    received: list[str] = []
    with embedded_connection(tmp_path) as connection:
        simple = connection.SimpleQueue("default")  # declares queue and binding before anyone publishes
        context = multiprocessing.get_context("spawn")
        publishers = [
            context.Process(target=publish_many, args=(tmp_path, p, PER_PUBLISHER)) for p in range(PUBLISHERS)
        ]
        for process in publishers:
            process.start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:  # no wait between takes: as many chances as possible to catch a file being written
                message = simple.get_nowait()
            except Empty:
                if not any(process.is_alive() for process in publishers) and not simple.qsize():
                    break
                continue
            assert message.payload["filler"] == FILLER
            received.append(message.payload["id"])
            message.ack()
        for process in publishers:
            process.join(10)
            assert process.exitcode == 0
        simple.close()
    expected = {f"{p}-{n}" for p in range(PUBLISHERS) for n in range(PER_PUBLISHER)}
    assert sorted(received) == sorted(expected)  # each one, once
    folders = broker_folders(tmp_path)
    assert not os.listdir(folders.bad) and not os.listdir(folders.staging) and not os.listdir(folders.queue)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00\xff{not json",
        b'{"body": "x"}',
        b"[1, 2]",
        b'{"body": "abc", "properties": {"delivery_tag": 1, "delivery_info": {}, "body_encoding": "base64"}}',
        b'{"body": "x", "properties": {"delivery_tag": 1, "delivery_info": {}, "body_encoding": "rot13"}}',
        b'{"body": "x", "properties": {"delivery_tag": 1, "delivery_info": {}, "body_encoding": ["x"]}}',
        b'{"body": "x", "headers": "x", "properties": {"delivery_tag": 1, "delivery_info": {}}}',
        b'{"body": "x", "properties": {"delivery_tag": [1], "delivery_info": {}}}',
    ],
    ids=[
        "empty",
        "garbage",
        "no-properties",
        "not-an-object",
        "bad-base64",
        "unknown-encoding",
        "odd-encoding",
        "headers-not-an-object",
        "unhashable-delivery-tag",
    ],
)
def test_a_message_kombu_cannot_build_is_moved_aside_and_the_next_one_delivered(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    folders = broker_folders(tmp_path)
    with embedded_connection(tmp_path) as connection:
        simple = connection.SimpleQueue("default")
        bad_name = "0_00000000-0000-4000-8000-000000000000.default.msg"  # sorted first
        (folders.queue / bad_name).write_bytes(content)
        simple.put({"ok": True}, serializer="json")
        message = simple.get(timeout=2)
        assert message.payload == {"ok": True}
        message.ack()
        with pytest.raises(Empty):
            simple.get(timeout=0.3)
        simple.close()
    assert (folders.bad / bad_name).read_bytes() == content
    assert [r.levelname for r in caplog.records if bad_name in r.getMessage()] == ["WARNING"]


def test_prune_removes_what_a_killed_publisher_left_in_staging_and_keeps_bad_files(tmp_path: Path) -> None:
    folders = broker_folders(tmp_path)
    folders.create()
    staged, bad = folders.staging / "1_a.default.msg", folders.bad / "2_b.default.msg"
    for path in (staged, bad):
        path.write_text("{")
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    assert prune(tmp_path, older_than_s=600) == 1
    assert not staged.exists() and bad.exists()


def test_a_worker_told_to_stop_stops_waiting_for_messages_and_a_client_waits_its_whole_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery's worker on this transport asks for messages with a 2 s timeout and looks for a shutdown request
    only between two asks: the transport ends a wait once the worker was told to stop (Ctrl-C, SIGTERM)."""
    from celery.signals import worker_shutting_down

    from workers import filesystem_transport

    monkeypatch.setattr(filesystem_transport, "_told_to_stop", threading.Event())  # this test's own
    with embedded_connection(tmp_path) as connection:
        queue = connection.SimpleQueue("idle")  # consumes an empty queue: every wait runs to its end
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            connection.drain_events(timeout=0.6)
        assert time.monotonic() - started >= 0.6  # nobody asked to stop: the whole timeout

        # What the worker's SIGTERM handler sends (warm shutdown).
        worker_shutting_down.send(sender="test-worker", sig="SIGTERM", how="Warm", exitcode=0)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            connection.drain_events(timeout=30)
        assert time.monotonic() - started < 2.0
        queue.close()
