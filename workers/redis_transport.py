"""kombu's Redis transport, closing every channel of a connection even when closing one of them fails.

Why: a worker that lost Redis while it ran an execution and waited for the next one stopped consuming for
good. Celery's consumer handles the loss (``Consumer.on_connection_error_after_connected``) by collecting the
connection and then closing it. kombu's ``Connection.collect`` closes the default channel, then asks the
transport to close every channel (``close_connection``), then detaches the transport from the connection
(``transport.client = None``). With Redis gone, two closes fail with a connection error:

- the task channel's, at its first step: it reads the reply of its pending ``BRPOP`` from the dead socket,
  so nothing of the channel is closed (the read at least marks the ``BRPOP`` as no longer pending);
- the remote-control (pidbox) channel's, deleting its auto-delete broadcast queue on the server.

kombu's ``close_connection`` stops at the first failure, so the task channel, closed later in the loop, stays
open. Celery's final ``connection.close()`` closes it again; this time it gets as far as putting its
unacknowledged messages back, which needs a connection pool, which needs ``transport.client``:
``AttributeError: 'NoneType' object has no attribute 'hostname'`` in ``_connparams``. That is not a connection
error, so Celery logs "Unrecoverable error" and shuts the worker down: it consumes nothing more, waits for its
running executions, and exits 1.

:class:`Transport` changes one thing: ``close_connection`` goes on closing the remaining channels when one
fails with a connection error (the one that failed is already off kombu's list), then raises the first such
error as before. Every channel is then closed before the transport is detached, the final ``close()`` has
nothing left to do, and Celery reconnects as it does after any other loss. Messages that could not be put
back stay in Redis's unacked index, where kombu's visibility timeout restores them (and the database is the
truth: docs/architecture.md, invariant 1).

Celery selects it through its documented ``broker_transport`` setting for ``redis://`` URLs (see
:func:`workers.celery_config.build_config`); ``tests/faults/test_redis_transport_loss.py`` says when kombu
no longer needs it.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis


class Transport(redis.Transport):
    """kombu's Redis transport whose ``close_connection`` closes every channel (see the module docstring)."""

    def close_connection(self, connection: Any) -> None:
        # Each failed attempt took one channel off kombu's lists (a channel is on ``channels`` and at most
        # once more on the spare list), so this many attempts always get through them all.
        attempts = 2 * len(self.channels) + 1
        first_error: BaseException | None = None
        for _ in range(attempts):
            try:
                super().close_connection(connection)  # type: ignore[no-untyped-call]
            except self.connection_errors as error:
                first_error = first_error or error
            else:
                break
        if first_error is not None:
            raise first_error
