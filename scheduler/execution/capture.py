"""Log lines of one attempt, kept in memory within the execution's byte budget until they are stored.

The budget (``maxLogBytes``) is per execution, shared by its attempts: a buffer starts with what earlier
attempts used. Past the budget, lines are counted but not kept, and :meth:`LogBuffer.drain` ends with one
marker line saying how much was dropped. Thread-safe: the command logs from its thread while the heartbeat
thread drains.
"""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime

from scheduler.records import PendingLog

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TRUNCATION_MARKER = (
    "[log truncated: {lines} more lines ({bytes} bytes) over the {limit}-byte limit of this execution]"
)
_MARKER_RESERVE = 200  # bytes kept free for the marker line


class LogBuffer:
    def __init__(self, *, limit_bytes: int, used_bytes: int = 0) -> None:
        self._limit = limit_bytes
        self._used = used_bytes
        self._lines: list[PendingLog] = []
        self._dropped_lines = 0
        self._dropped_bytes = 0
        self._marked = False
        self._lock = threading.Lock()

    def log(self, level: str, message: str) -> None:
        """Keep one line (``level`` one of DEBUG/INFO/WARNING/ERROR; anything else is INFO)."""
        level = str(level).upper()
        if level not in LEVELS:
            level = "INFO"
        text = str(message).replace("\x00", "")
        size = len(text.encode("utf-8", errors="replace"))
        with self._lock:
            room = self._limit - _MARKER_RESERVE - self._used
            if size > room:
                if room > 80 and not self._dropped_lines:  # keep the head of the line that crosses the limit
                    head = text.encode("utf-8", errors="replace")[: room - 40].decode(
                        "utf-8", errors="ignore"
                    )
                    kept = head + f" [... {size - len(head.encode('utf-8'))} bytes cut]"
                    self._append(level, kept)
                    self._dropped_bytes += size - len(head.encode("utf-8"))
                    self._used = self._limit - _MARKER_RESERVE
                    return
                self._dropped_lines += 1
                self._dropped_bytes += size
                return
            self._append(level, text)
            self._used += size

    def _append(self, level: str, text: str) -> None:
        self._lines.append(PendingLog(at=datetime.now(UTC), level=level, message=text))

    def drain(self, *, final: bool = False) -> list[PendingLog]:
        """The lines kept since the last drain; ``final`` adds the truncation marker if lines were dropped."""
        with self._lock:
            lines, self._lines = self._lines, []
            if final and (self._dropped_lines or self._dropped_bytes) and not self._marked:
                self._marked = True
                marker = TRUNCATION_MARKER.format(
                    lines=self._dropped_lines, bytes=self._dropped_bytes, limit=self._limit
                )
                lines.append(PendingLog(at=datetime.now(UTC), level="WARNING", message=marker))
            return lines

    def restore(self, lines: list[PendingLog]) -> None:
        """Put drained lines back in front (their store failed; the next drain retries them)."""
        with self._lock:
            self._lines[:0] = lines

    @property
    def dropped_lines(self) -> int:
        return self._dropped_lines


class LogWriter(io.TextIOBase):
    """A text stream that turns written lines into log lines (``print`` in a python command)."""

    def __init__(self, buffer: LogBuffer, level: str) -> None:
        super().__init__()
        self._buffer = buffer
        self._level = level
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._partial += text
        if "\n" in self._partial:
            *complete, self._partial = self._partial.split("\n")
            for line in complete:
                self._emit(line)
        elif len(self._partial) > 65_536:  # no newline for a long time: do not grow without bound
            self._emit(self._partial)
            self._partial = ""
        return len(text)

    def _emit(self, line: str) -> None:
        if line.strip():
            self._buffer.log(self._level, line.rstrip("\r"))

    def flush(self) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = ""
