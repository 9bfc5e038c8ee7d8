"""Serve the console with uvicorn; refuse a non-loopback address without authentication (as Flower)."""

from __future__ import annotations

import ipaddress
import signal
from types import FrameType
from typing import TYPE_CHECKING

from scheduler.errors import ConfigError

if TYPE_CHECKING:
    from scheduler.service import SchedulerService
    from scheduler.settings import Settings
    from web.live import EventSource

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 8470


def is_loopback(address: str) -> bool:
    """True for ``localhost`` and loopback IPs (``127.0.0.0/8``, ``::1``); '' (every interface) is not."""
    host = address.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name might resolve anywhere: treat it as public


def check_bind(settings: Settings, address: str) -> None:
    """ConfigError (exit 2) when ``address`` is not loopback and no authentication is configured."""
    authenticated = bool((settings.web_users or "").strip())
    if not is_loopback(address) and not authenticated:
        shown = address or "every interface"
        raise ConfigError(
            f"refusing to serve the web console on {shown} without authentication: set SCHEDULER_WEB_USERS "
            "(name:role:hash, see 'scheduler:web --hash-password'), or listen on --address=127.0.0.1"
        )


def run(
    service: SchedulerService,
    address: str,
    port: int,
    *,
    log_level: str = "info",
    events: EventSource | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn's graceful shutdown); ``events``: see :mod:`web.live`."""
    import uvicorn

    from web.app import create_app

    check_bind(service.settings, address)
    app = create_app(service, require_auth=not is_loopback(address), events=events)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for the handler it found:
    # with this no-op one, that stop is a clean exit (0) rather than a death by signal.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _stopped)
    uvicorn.run(app, host=address, port=port, log_level=log_level, access_log=False, server_header=False)


def _stopped(_signum: int, _frame: FrameType | None) -> None:
    """The console has already shut down when this runs (see :func:`run`)."""
