"""Pieces of the Celery publisher that need no broker: the message Celery builds for a dispatch."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from celery.utils.nodenames import anon_nodename

from scheduler.limits import TASK_NAME, hard_limit_grace_s
from scheduler.records import Dispatch
from scheduler.settings import Settings
from workers.app import create_app
from workers.publisher import task_messages


@pytest.fixture
def app(tmp_path: Path) -> Any:
    return create_app(Settings(home=tmp_path / "home"))  # the embedded broker: nothing is contacted


def test_each_message_gets_its_own_random_version_4_task_id_in_canonical_form(app: Any) -> None:
    seen = set()
    for headers, properties, _body, _event in task_messages(
        app, [Dispatch(n, "q", "c", "t") for n in range(5000)]
    ):
        parsed = uuid.UUID(headers["id"])
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == headers["id"] == headers["root_id"] == properties["correlation_id"]
        seen.add(headers["id"])
    assert len(seen) == 5000


def test_a_message_carries_task_args_shadow_time_limit_and_eta(app: Any) -> None:
    before = time.time()
    ((headers, properties, body, event),) = task_messages(
        app, [Dispatch(41, "q", "backup:run", "nightly", timeout_s=60.0, countdown_s=30.0)]
    )
    assert headers["task"] == TASK_NAME and headers["origin"] == anon_nodename()
    assert headers["shadow"] == "backup:run [nightly]"
    assert headers["timelimit"] == [60.0 + hard_limit_grace_s(60.0), None]
    assert headers["argsrepr"] == "[41]" and headers["kwargsrepr"] == "{}"
    assert headers["ignore_result"] is True
    assert before + 29 <= datetime.fromisoformat(headers["eta"]).timestamp() <= time.time() + 31
    assert body[0] == [41] and body[1] == {}
    assert properties["reply_to"] == app.thread_oid
    assert event is None  # sent events are off (workers.celery_config)


def test_with_sent_events_on_a_message_comes_with_its_task_sent_event(app: Any) -> None:
    app.conf.task_send_sent_event = True
    ((headers, _properties, _body, event),) = task_messages(app, [Dispatch(7, "q", "c", "t")])
    assert event is not None and event["uuid"] == headers["id"] and event["name"] == TASK_NAME
    assert headers["eta"] is None and headers["timelimit"] == [None, None]
