"""The alert channels' senders (adapters of :class:`scheduler.alerting.port.Sender`; docs/alerts.md).

- ``webhook``: a JSON POST whose body is signed: ``X-Scheduler-Signature: sha256=<hex>``, the HMAC-SHA256
  of ``<X-Scheduler-Timestamp>.<body>`` keyed with the secret in ``secretEnv``; ``X-Scheduler-Delivery`` is
  the delivery id (the same on every retry of one message).
- ``slack``: a Slack-compatible incoming webhook, ``{"text": <summary>}``.
- ``email``: one message over SMTP (STARTTLS and login when configured).

Secrets (the HMAC key, a URL held in ``urlEnv``, SMTP credentials) are read from the environment when a
message is sent and never appear in an error: a reason that contains one has it replaced by ``***``.
Retries are the outbox's (scheduler.alerting.outbox): each ``send`` is one attempt bounded by ``timeout``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import smtplib
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

from scheduler.alerting.port import Sender
from scheduler.errors import DeliveryFailed
from scheduler.settings import AlertChannel, Settings

SIGNATURE_HEADER = "X-Scheduler-Signature"
TIMESTAMP_HEADER = "X-Scheduler-Timestamp"
DELIVERY_HEADER = "X-Scheduler-Delivery"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class _Channel:
    def __init__(self, name: str, config: AlertChannel, env: Mapping[str, str]) -> None:
        self.name = name
        self.config = config
        self.env = env
        self._secrets: list[str] = []

    def send(self, payload: dict[str, Any], *, delivery_id: int) -> None:
        raise NotImplementedError

    def _secret(self, variable: str | None, what: str, *, required: bool = True) -> str | None:
        if variable is None:
            return None
        value = self.env.get(variable)
        if not value:
            if required:
                raise DeliveryFailed(self.name, f"the environment variable {variable} ({what}) is not set")
            return None
        self._secrets.append(value)
        return value

    def _fail(self, reason: object) -> DeliveryFailed:
        text = " ".join(str(reason).split())[:300] or type(reason).__name__
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return DeliveryFailed(self.name, text)

    def _url(self) -> str:
        url = self._secret(self.config.url_env, "the channel URL") or self.config.url
        assert url is not None  # the settings require url or urlEnv
        return url

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        request = urllib.request.Request(url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout / 1000) as response:
                response.read(65536)
        except urllib.error.HTTPError as error:
            raise self._fail(f"HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise self._fail(f"cannot reach the channel: {reason}") from None


class WebhookSender(_Channel):
    def send(self, payload: dict[str, Any], *, delivery_id: int) -> None:
        body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "systemprompt-scheduler",
            TIMESTAMP_HEADER: timestamp,
            DELIVERY_HEADER: str(delivery_id),
        }
        secret = self._secret(self.config.secret_env, "the signing secret")
        if secret is not None:
            headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
        self._post(self._url(), body, headers)


class SlackSender(_Channel):
    def send(self, payload: dict[str, Any], *, delivery_id: int) -> None:
        body = json.dumps({"text": payload["summary"]}).encode()
        self._post(self._url(), body, {"Content-Type": "application/json"})


class EmailSender(_Channel):
    def send(self, payload: dict[str, Any], *, delivery_id: int) -> None:
        config = self.config
        message = EmailMessage()
        message["Subject"] = payload["summary"][:200]
        message["From"] = config.sender
        message["To"] = ", ".join(config.to)
        message["X-Scheduler-Delivery"] = str(delivery_id)
        message.set_content(
            payload["summary"] + "\n\n" + json.dumps(payload, indent=2, sort_keys=True) + "\n"
        )
        user = self._secret(config.username_env, "the SMTP user name")
        password = self._secret(config.password_env, "the SMTP password")
        try:
            with smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=config.timeout / 1000) as smtp:
                if config.starttls:
                    smtp.starttls()
                if user is not None and password is not None:
                    smtp.login(user, password)
                smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as error:
            raise self._fail(f"SMTP: {error}") from None


SENDERS: dict[str, type[_Channel]] = {"webhook": WebhookSender, "slack": SlackSender, "email": EmailSender}


def alert_senders(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, Sender]:
    """One sender per channel of ``settings.alert_channels`` (secrets read from ``env`` when sending)."""
    env = os.environ if env is None else env
    return {name: SENDERS[config.type](name, config, env) for name, config in settings.alert_channels.items()}
