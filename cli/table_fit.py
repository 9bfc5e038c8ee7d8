"""Fitting a table to the terminal's width without breaking a time or a word in two.

rich shrinks every wrapping column alike when a table is too wide, so a time becomes ``2026-1`` / ``2-04``.
:func:`fit_table` decides instead, per column, the width each needs and what to give up, in this order until
the table fits: nothing; times in their compact form (``2026-03-28 01:00``, the table says they are UTC); one
more column with a ``drop_order`` left out (the lowest first), again with full then compact times. Each
column then gets at least what its cells cannot do without (a whole time, the longest word) and at most what
they use. When even that is too wide (every droppable column gone, compact times), times keep their width and
the other columns share the rest, their cells wrapped or cut short.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cli.cells import Column

# A word longer than this may be folded ("words" columns: names, commands; cut short with … in a plain
# table), so a long name does not push the times off the screen; free text ("text" columns) keeps at least
# this many characters per line.
WORD_LIMIT = 20
TEXT_MINIMUM = 12


@dataclass(frozen=True, slots=True)
class TableLayout:
    """The columns shown, the content width of each (None: as wide as they are) and the form of times."""

    columns: Sequence[Column]
    widths: Sequence[int] | None
    compact_times: bool
    one_line: Sequence[bool]  # per column: its cells are times (or ``line`` text) that must not wrap


def fit_table(
    columns: Sequence[Column],
    rows: Sequence[Any],
    width: int | None,
    *,
    per_column: int,
    fixed: int,
    wraps: bool,
) -> TableLayout:
    """The layout of ``rows`` in ``columns`` within ``width`` characters (None: no limit), where the table
    itself takes ``per_column`` characters per column plus ``fixed`` (borders, padding, gaps). ``wraps``: the
    table wraps cells onto more lines (rich); a plain table keeps one line per row, so only ``text`` cells
    may be cut short there."""
    one_line = [_one_line(column, rows) for column in columns]
    if width is None or not rows:
        return TableLayout(columns, None, False, one_line)
    droppable = sorted(
        (n for n, c in enumerate(columns) if c.drop_order is not None),
        key=lambda n: columns[n].drop_order or 0,
    )
    for dropped in range(len(droppable) + 1):
        kept = [n for n in range(len(columns)) if n not in droppable[:dropped]]
        shown, shown_one_line = [columns[n] for n in kept], [one_line[n] for n in kept]
        room = width - fixed - per_column * len(kept)
        for compact in (False, True):
            natural, needed = _measure(shown, rows, compact, wraps)
            if sum(needed) <= room:
                return TableLayout(shown, _share(natural, needed, room), compact, shown_one_line)
    # Still too wide with every droppable column gone and compact times (the last layout tried).
    return TableLayout(shown, _squeeze(natural, needed, shown_one_line, room), True, shown_one_line)


def _one_line(column: Column, rows: Sequence[Any]) -> bool:
    return column.flow == "line" or any(isinstance(column.value(row), datetime) for row in rows)


def _measure(
    columns: Sequence[Column], rows: Sequence[Any], compact: bool, wraps: bool
) -> tuple[list[int], list[int]]:
    """Per column: the width its longest cell uses (up to its ``max_width``), and the least it needs."""
    natural, needed = [], []
    for column in columns:
        title = column.title
        used, least = len(title), len(title)
        for row in rows:
            text = column.text(row, compact=compact)
            used = max(used, len(text))
            least = max(least, _unbreakable(column, column.value(row), text, wraps))
        if column.max_width is not None:
            used = min(used, column.max_width)
        natural.append(used)
        needed.append(min(least, used))
    return natural, needed


def _unbreakable(column: Column, value: Any, text: str, wraps: bool) -> int:
    """How many characters of a cell (``value`` shown as ``text``) must stay on one line."""
    if isinstance(value, datetime) or column.flow == "line":
        return len(text)
    if column.flow == "text":
        return min(len(text), TEXT_MINIMUM)
    longest = max((len(word) for word in text.split()), default=0) if wraps else len(text)
    return min(longest, WORD_LIMIT)


def _share(natural: list[int], needed: list[int], room: int) -> list[int]:
    """Widths from ``needed`` up to ``natural``, the space left handed out column by column, left first."""
    widths, spare = list(needed), room - sum(needed)
    for n, want in enumerate(natural):
        grant = min(spare, want - widths[n])
        widths[n] += grant
        spare -= grant
    return widths


def _squeeze(natural: list[int], needed: list[int], whole: list[bool], room: int) -> list[int] | None:
    """Widths when even the least each column needs is too wide: times (``whole``) keep theirs, the other
    columns share what is left, the smallest need first (each gets its need or an even share of what is left,
    whichever is less), so a short word such as a status stays whole and the long ones wrap or are cut
    short; None when the times alone fill the room."""
    flexible = [n for n, keep in enumerate(whole) if not keep]
    left = room - sum(want for want, keep in zip(needed, whole, strict=True) if keep)
    if left < len(flexible) * 3 or not flexible:
        return None
    widths = list(needed)
    for place, n in enumerate(sorted(flexible, key=lambda n: needed[n])):
        share = left // (len(flexible) - place)
        widths[n] = min(natural[n], max(3, min(needed[n], share)))
        left -= widths[n]
    return widths
