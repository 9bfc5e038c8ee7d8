"""The port alerts are sent through: one :class:`Sender` per configured channel (adapters in
``workers/alert_channels.py``, chosen in ``workers/wiring.py``)."""

from __future__ import annotations

from typing import Any, Protocol


class Sender(Protocol):
    """Sends one alert message; raises :class:`~scheduler.errors.DeliveryFailed` (a one-line reason that
    never contains a secret) when the channel did not take it."""

    def send(self, payload: dict[str, Any], *, delivery_id: int) -> None: ...
