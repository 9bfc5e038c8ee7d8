"""kombu's filesystem transport with atomic publishes and undecodable messages moved aside.

kombu's own ``Channel._put`` creates the message file in the folder consumers poll and then writes it (the
``flock`` it takes is advisory: a consumer's ``rename`` ignores it), so a consumer can take a file that is
still empty; its ``_get`` then raises ``JSONDecodeError``, which Celery's consumer treats as unrecoverable and
the worker stops. This transport keeps kombu's folder layout, file names, exchange tables and fanout, and
replaces the two methods kombu documents for a virtual transport to implement (``AbstractChannel``):

- :meth:`Channel._put` writes the message under ``staging_folder`` (same file system) and then ``os.replace``
  moves it into the queue folder: a consumer sees a complete file or none (POSIX ``rename`` is atomic).
- :meth:`Channel._get` takes a file by ``os.rename`` into ``processed_folder`` (one consumer wins) and hands
  on only a message kombu can build; anything else (unreadable, empty, not JSON, not a kombu envelope) is
  moved to ``bad_folder`` with one warning line, and the next file is tried.

Celery selects it through its documented ``broker_transport`` setting (a transport class path, see
:mod:`workers.embedded`); kombu accepts URL schemes only for its own aliases.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Hashable
from queue import Empty
from time import monotonic
from typing import Any, ClassVar

from celery.signals import worker_shutting_down
from kombu.exceptions import ChannelError
from kombu.transport import filesystem, virtual
from kombu.utils.json import dumps, loads
from kombu.utils.objects import cached_property

logger = logging.getLogger(__name__)
STOP_CHECK_S = 0.2  # how often a waiting worker looks whether it was told to stop (Transport.drain_events)


def message_filename(queue: str) -> str:
    """kombu's name of a message file: ``<monotonic ms>_<uuid>.<queue>.msg`` (sorted: oldest first)."""
    return f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"


class Channel(filesystem.Channel):
    """A filesystem channel whose consumers never see a half-written message and never stop on a bad one."""

    @cached_property
    def staging_folder(self) -> str:
        return str(self.transport_options["staging_folder"])

    @cached_property
    def bad_folder(self) -> str:
        return str(self.transport_options["bad_folder"])

    # kombu's filesystem channel names the parameter ``payload``, its abstract channel ``message``.
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = message_filename(queue)
        staged = os.path.join(self.staging_folder, name)
        try:
            with open(staged, "xb") as file:
                file.write(dumps(payload).encode())  # type: ignore[no-untyped-call]
            os.replace(staged, os.path.join(self.data_folder_out, name))
        except OSError as error:
            with contextlib.suppress(OSError):
                os.unlink(staged)
            raise ChannelError(f"Cannot add file {name!r} to {self.data_folder_out!r}") from error

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue
            taken = os.path.join(self.processed_folder, name)
            try:
                os.rename(os.path.join(self.data_folder_in, name), taken)
            except OSError:  # another consumer took it first
                continue
            try:
                with open(taken, "rb") as file:
                    raw = file.read()
            except OSError as error:
                self._move_aside(taken, f"unreadable: {error}")
                continue
            payload, problem = self._decode(raw)
            if problem is None:
                return payload
            self._move_aside(taken, problem)
        raise Empty()

    def _decode(self, raw: bytes) -> tuple[Any, str | None]:
        """The message in ``raw`` and ``None``, or ``None`` and why kombu could not build a message of it
        (its virtual ``Message`` needs ``properties`` with a ``delivery_tag`` and ``delivery_info``, and a
        body its ``body_encoding`` decodes)."""
        if not raw:
            return None, "empty file"
        try:
            payload = loads(raw.decode())  # type: ignore[no-untyped-call]
        except (UnicodeDecodeError, ValueError) as error:
            return None, f"not JSON: {error}"
        properties = payload.get("properties") if isinstance(payload, dict) else None
        if not isinstance(properties, dict) or "delivery_tag" not in properties:
            return None, "not a kombu message: no properties.delivery_tag"
        if not isinstance(properties["delivery_tag"], Hashable):  # kombu keys its unacked messages by it
            return None, "not a kombu message: properties.delivery_tag is a list or an object"
        if not isinstance(properties.get("delivery_info"), dict):
            return None, "not a kombu message: no properties.delivery_info"
        encoding = properties.get("body_encoding")
        plain = encoding is None or (isinstance(encoding, str) and encoding.lower() in ("", "utf-8"))
        if not plain and not (isinstance(encoding, str) and encoding in self.codecs):
            return None, f"not a kombu message: unknown body_encoding {encoding!r}"
        try:  # what the consumer does next (decodes the body, reads the headers), so it cannot fail there
            self.Message(payload, channel=self)  # type: ignore[no-untyped-call]
        except Exception as error:  # binascii.Error of a bad body, AttributeError of headers not an object
            return None, f"not a kombu message: {type(error).__name__}: {error}"
        return payload, None

    def _move_aside(self, taken: str, problem: str) -> None:
        name = os.path.basename(taken)
        try:
            os.replace(taken, os.path.join(self.bad_folder, name))
            where = self.bad_folder
        except OSError as error:
            where = f"{self.processed_folder} (moving it to {self.bad_folder} failed: {error})"
        logger.warning("embedded broker: skipped message file %s (%s); it is in %s", name, problem, where)


class Transport(filesystem.Transport):
    """The transport; its in-memory broker state (declared exchanges, bindings) is one per control folder.

    kombu shares one state among all filesystem connections of a process, so once a binding was declared
    for one folder it is never written to another folder's exchange table, and publishes there are routed to
    no queue (two homes in one process: tests, tools)."""

    Channel = Channel
    _states: ClassVar[dict[str, virtual.BrokerState]] = {}

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)  # type: ignore[no-untyped-call]
        folder = os.path.abspath(str(client.transport_options["control_folder"]))
        self.state = self._states.setdefault(folder, virtual.BrokerState())  # type: ignore[no-untyped-call]

    def drain_events(self, connection: Any, timeout: float | None = None, **_: Any) -> Any:
        """kombu's loop (look for a message every ``polling_interval`` until one comes or ``timeout`` passes),
        which also ends once the worker of this process has been told to stop.

        Celery's worker on a transport without an event loop (its ``synloop``) looks for a shutdown request
        between calls of ``drain_events(timeout=2.0)``: an idle worker or ``serve`` sat out that wait after
        Ctrl-C or SIGTERM (its warm shutdown took ~6 s, 3 s with this). Outside a worker (a client waiting
        for replies) nothing changes.
        """
        if not timeout:
            return super().drain_events(connection, timeout=timeout)  # type: ignore[no-untyped-call]
        deadline = monotonic() + timeout
        while True:
            try:
                step = max(min(deadline - monotonic(), STOP_CHECK_S), 0.001)
                return super().drain_events(connection, timeout=step)  # type: ignore[no-untyped-call]
            except TimeoutError:  # socket.timeout
                if monotonic() >= deadline or _told_to_stop.is_set():
                    raise


# Set when Celery's worker in this process is told to stop (Ctrl-C, SIGTERM: warm or cold shutdown); its
# signal handler sends worker_shutting_down before the worker's loop next looks whether to stop.
_told_to_stop = threading.Event()


def _on_worker_shutting_down(**_: Any) -> None:
    _told_to_stop.set()


worker_shutting_down.connect(_on_worker_shutting_down, weak=False, dispatch_uid="filesystem-transport-stop")
