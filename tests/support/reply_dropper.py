"""A TCP relay in front of a Redis server that can lose the server's answers to a publish.

Everything a client sends reaches Redis, so Redis runs the commands; once :meth:`ReplyDropper.arm` was
called, the connection that next sends ``LPUSH`` (how kombu puts a message on a Redis list; a batch sends
them all in one pipeline) hears nothing more from the server (its replies are dropped), as when a connection
dies after the request went out. Other connections pass untouched.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

LPUSH = b"\r\nLPUSH\r\n"  # the RESP encoding of the command (its argument count and length precede it)


@dataclass
class ReplyDropper:
    redis_port: int
    port: int = 0
    _armed: threading.Event = field(default_factory=threading.Event)
    _listener: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()

    def arm(self) -> None:
        """Drop the server's replies on the next connection that sends ``LPUSH`` (once)."""
        self._armed.set()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # stopped
            server = socket.create_connection(("127.0.0.1", self.redis_port))
            deaf = threading.Event()
            threading.Thread(target=self._upstream, args=(client, server, deaf), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client, deaf), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket, deaf: threading.Event) -> None:
        try:
            while data := client.recv(65536):
                if LPUSH in data and self._armed.is_set():
                    self._armed.clear()
                    deaf.set()  # before Redis can answer
                server.sendall(data)
        except OSError:
            pass
        finally:
            server.close()

    def _downstream(self, server: socket.socket, client: socket.socket, deaf: threading.Event) -> None:
        try:
            while data := server.recv(65536):
                if not deaf.is_set():
                    client.sendall(data)
        except OSError:
            pass
        finally:
            client.close()
