"""The embedded broker: kombu's filesystem transport, made atomic, under ``<home>/broker`` (no server).

Celery uses :mod:`workers.filesystem_transport` (selected with the ``broker_transport`` setting): a publish
writes the message under ``staging/`` and renames it into ``queue/``, so a consumer sees a whole message or
none; a consumer takes a message by renaming it into ``processed/`` (one rename wins, so two workers never
get the same one), and a file that does not decode is moved to ``bad/`` with one warning line instead of
stopping the worker. kombu's own filesystem transport writes the file in place, and a worker that takes it
while it is still empty dies with ``JSONDecodeError`` (what ``make run`` met).

Why this and not ``sqla+sqlite://`` (kombu's SQLAlchemy transport), measured with ``bench/embedded_broker.py``
(figures in docs/operations.md): it supports fanout across processes, so Celery's remote control
(``celery inspect ping``) and Flower work, where the SQLAlchemy transport delivers fanout only inside one
process; it publishes and consumes several times faster; nothing piles up (the SQLAlchemy transport keeps
every delivered row); and it does not contend for SQLite's single write lock with the scheduler's database.

Like every virtual transport it has no visibility timeout: a message is gone from the folder once a worker
took it, and a worker killed with ``kill -9`` loses what it held. Writes are not fsynced: after a power loss a
message may be missing or empty (an empty one goes to ``bad/``). The database is the truth
(invariant 1 of docs/architecture.md): the planner's recovery sweep republishes executions nobody claimed,
so nothing is lost, only delayed.

:func:`prune` deletes taken messages (``processed/``), messages of broadcast queues whose consumer died
(Flower, remote control replies) and files a killed publisher left in ``staging/`` after
:data:`PRUNE_AFTER_S`; serve and the worker run it in the background. ``bad/`` is left for a person to read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

EMBEDDED_BROKER_URL = "filesystem://localhost/"
# Celery's broker_transport: kombu's filesystem transport, made atomic (imported by kombu when it connects).
EMBEDDED_TRANSPORT = "workers.filesystem_transport:Transport"
POLLING_INTERVAL_S = 0.1  # how often an idle worker looks for new message files
PRUNE_AFTER_S = 600.0
PRUNE_EVERY_S = 60.0
# Queues whose messages nobody may consume once their consumer is gone: Celery events and remote control.
_BROADCAST_MARKERS = ("celeryev.", ".pidbox", "celery.pidbox")


@dataclass(frozen=True, slots=True)
class BrokerFolders:
    queue: Path  # messages waiting to be taken
    processed: Path  # messages taken by a consumer
    control: Path  # exchange tables (which queue is bound to which exchange)
    staging: Path  # messages being written, moved into ``queue`` once whole
    bad: Path  # message files that do not decode, moved aside by the consumer that took them

    def create(self) -> None:
        for folder in (self.queue, self.processed, self.control, self.staging, self.bad):
            folder.mkdir(parents=True, exist_ok=True)


def broker_folders(home: Path) -> BrokerFolders:
    base = home.resolve() / "broker"
    return BrokerFolders(
        queue=base / "queue",
        processed=base / "processed",
        control=base / "control",
        staging=base / "staging",
        bad=base / "bad",
    )


def is_embedded_broker(url: str) -> bool:
    return url.startswith("filesystem:")


def transport_options(home: Path) -> dict[str, Any]:
    """Transport options of the embedded broker (:mod:`workers.filesystem_transport`); creates its folders."""
    folders = broker_folders(home)
    folders.create()
    return {
        # Producers write where consumers read: one folder.
        "data_folder_in": str(folders.queue),
        "data_folder_out": str(folders.queue),
        "processed_folder": str(folders.processed),
        "control_folder": str(folders.control),
        "staging_folder": str(folders.staging),
        "bad_folder": str(folders.bad),
        "polling_interval": POLLING_INTERVAL_S,
    }


def _is_broadcast(filename: str) -> bool:
    queue = filename.partition(".")[2].removesuffix(".msg")
    return any(marker in queue for marker in _BROADCAST_MARKERS)


def prune(home: Path, *, older_than_s: float = PRUNE_AFTER_S, now: float | None = None) -> int:
    """Delete processed messages, orphaned broadcast messages and files a killed publisher left in staging,
    older than ``older_than_s``; return how many. Files in ``bad/`` stay for a person to look at."""
    folders = broker_folders(home)
    cutoff = (time.time() if now is None else now) - older_than_s
    removed = 0
    sweeps = ((folders.processed, False), (folders.staging, False), (folders.queue, True))
    for folder, only_broadcast in sweeps:
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            if only_broadcast and not _is_broadcast(entry.name):
                continue
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
    return removed


def start_pruner(home: Path, stop: threading.Event, *, every_s: float = PRUNE_EVERY_S) -> threading.Thread:
    """Run :func:`prune` every ``every_s`` seconds in a daemon thread until ``stop`` is set."""

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                prune(home)
            except OSError as error:  # a full or read-only disk must not stop the worker
                logger.warning("pruning the embedded broker failed: %s", error)

    thread = threading.Thread(target=loop, name="embedded-broker-pruner", daemon=True)
    thread.start()
    return thread
