"""Output: rich tables for people, JSON for scripts.

JSON is the records' own ``to_json()`` form (field names = the record's field names, times ISO-8601 UTC with
``Z``), with secret-looking keys of a ``data`` field redacted. Tables show times as
``YYYY-MM-DD HH:MM:SS UTC``.

Tables: rich's bordered layout on a terminal for up to :data:`PLAIN_ABOVE` rows; a plain aligned text table
(one line per row, a header and a rule, columns two spaces apart, cells cut at the column's ``max_width``)
when stdout is not a terminal or there are more rows: rich measures and wraps every cell, ~1 ms per row.
``SCHEDULER_TABLES=rich`` or ``plain`` forces one style. rich is imported only when it draws. On a terminal,
both styles fit its width without breaking a time or a word (:mod:`cli.table_fit`); a plain table written to a
pipe is never cut to a width. Single records (:func:`print_fields`) follow the same style choice.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from cli.cells import Column, ColumnSpec, field_of, show_value
from cli.table_fit import fit_table

if TYPE_CHECKING:
    from rich.console import Console

# Wide enough for a task table when the output is a pipe; rich would otherwise assume 80 columns.
PIPE_WIDTH = 200
# More rows than this are printed as a plain table even on a terminal (rich's layout is ~1 ms per row).
PLAIN_ABOVE = 200
# Under a table whose times are shown in the compact form to fit the terminal.
COMPACT_TIMES_NOTE = "(times in UTC)"
# "rich" or "plain" forces a table style (say rich output piped into `less -R`); unset or "auto": see above.
TABLES_ENV = "SCHEDULER_TABLES"
# -------------------------------------------------------------------------------------------------- JSON


def _redacted(data: Any) -> Any:
    if not isinstance(data, Mapping):
        return data
    from scheduler.redaction import redact

    return redact(data)


def json_form(row: Any) -> Any:
    """A record's stable JSON form (``to_json()``), with its ``data`` redacted; mappings are copied."""
    if hasattr(row, "to_json"):
        value: dict[str, Any] = row.to_json()
    elif isinstance(row, Mapping):
        value = dict(row)
    else:
        return row
    if "data" in value:
        value["data"] = _redacted(value["data"])
    return value


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


# ------------------------------------------------------------------------------------------------ tables


def output_width() -> int | None:
    """The width tables must fit: the terminal's (``COLUMNS`` first), :data:`PIPE_WIDTH` for rich tables
    written to a pipe, None (no limit) for plain tables written to a pipe, which scripts read line by line."""
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None if use_plain_table(0) else PIPE_WIDTH


def console(width: int | None = None) -> Console:
    from rich.console import Console

    return Console(file=sys.stdout, width=width or output_width(), soft_wrap=False, highlight=False)


def _column(spec: ColumnSpec) -> Column:
    return spec if isinstance(spec, Column) else Column(spec)


def use_plain_table(row_count: int) -> bool:
    """Whether a table of ``row_count`` rows is printed plain: not a terminal, or many rows, unless
    ``SCHEDULER_TABLES`` says ``rich`` or ``plain``."""
    style = os.environ.get(TABLES_ENV, "").strip().lower()
    if style in ("rich", "plain"):
        return style == "plain"
    return row_count > PLAIN_ABOVE or not sys.stdout.isatty()


def _plain_cell(text: str, max_width: int | None) -> str:
    text = " ".join(text.split("\n")) if "\n" in text else text
    if max_width is not None and len(text) > max_width:
        return text[: max_width - 1] + "…"
    return text


def plain_table_lines(
    rows: Sequence[Any], columns: Sequence[ColumnSpec], *, title: str | None = None, width: int | None = None
) -> list[str]:
    """The plain table: a title line if given, the header, a rule, one line per row (see the module doc);
    fitted to ``width`` (see :func:`fit_table`) when given."""
    layout = fit_table([_column(spec) for spec in columns], rows, width, per_column=2, fixed=-2, wraps=False)
    specs = layout.columns
    limits: Sequence[int | None] = layout.widths or [spec.max_width for spec in specs]
    # A squeezed column cuts its header like its cells, so no line is wider than ``width``.
    headers = [_plain_cell(spec.title, limit) for spec, limit in zip(specs, limits, strict=True)]
    cells = [
        [
            _plain_cell(spec.text(row, compact=layout.compact_times), limit)
            for spec, limit in zip(specs, limits, strict=True)
        ]
        for row in rows
    ]
    widths = [max([len(header), *(len(line[i]) for line in cells)]) for i, header in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(value.ljust(width) for value, width in zip(values, widths, strict=True)).rstrip()

    lines = [title] if title else []
    lines += [line(headers), line(["-" * width for width in widths]), *map(line, cells)]
    if layout.compact_times:
        lines.append(COMPACT_TIMES_NOTE)
    return lines


def print_table(rows: Sequence[Any], columns: Sequence[ColumnSpec], *, title: str | None = None) -> None:
    width = output_width()
    if use_plain_table(len(rows)):
        click.echo("\n".join(plain_table_lines(rows, columns, title=title, width=width)))
        return
    from rich.table import Table
    from rich.text import Text

    # rich's borders: a line left of every column and one at the end, one space of padding on each side.
    layout = fit_table([_column(spec) for spec in columns], rows, width, per_column=3, fixed=1, wraps=True)
    caption = COMPACT_TIMES_NOTE if layout.compact_times else None
    table = Table(
        title=title, title_justify="left", header_style="bold", caption=caption, caption_justify="left"
    )
    for n, spec in enumerate(layout.columns):
        table.add_column(
            spec.title,
            width=None if layout.widths is None else layout.widths[n],
            max_width=spec.max_width if layout.widths is None else None,
            no_wrap=layout.one_line[n],
            overflow="ellipsis" if spec.flow == "text" else "fold",
        )
    for row in rows:
        # Text(), not str: a task name like "[red]x" must print as written, not as rich markup.
        table.add_row(*(Text(spec.text(row, compact=layout.compact_times)) for spec in layout.columns))
    console(width).print(table)


def print_fields(pairs: Sequence[tuple[str, str]], *, title: str | None = None) -> None:
    """A key/value panel: one record shown field by field (plain ``key  value`` lines when tables are)."""
    if use_plain_table(len(pairs)):
        key_width = max((len(key) for key, _ in pairs), default=0)
        lines = [title] if title else []
        lines += [f"{key.ljust(key_width)}  {_plain_cell(value, None)}".rstrip() for key, value in pairs]
        click.echo("\n".join(lines))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in pairs:
        table.add_row(Text(key), Text(value))
    console().print(table)


def print_note(message: str) -> None:
    """A line for people (table output only); scripts use JSON. On a terminal, long lines wrap between
    words at its width (the terminal itself would cut a word or a time in two)."""
    if sys.stdout.isatty():
        width = shutil.get_terminal_size().columns
        message = "\n".join(
            textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False) or line
            for line in message.splitlines()
        )
    click.echo(message)


# ------------------------------------------------------------------------------------------ entry points


def render(
    rows: Sequence[Any],
    columns: Sequence[ColumnSpec],
    output_format: str,
    *,
    title: str | None = None,
    empty: str = "nothing to show",
) -> None:
    """JSON: an array of each row's :func:`json_form`. Table: one line per row, ``columns`` of it."""
    if output_format == "json":
        print_json([json_form(row) for row in rows])
    elif not rows:
        print_note(empty)
    else:
        print_table(rows, columns, title=title)


def render_one(row: Any, output_format: str, *, title: str | None = None) -> None:
    """JSON: the row's :func:`json_form` object. Table: every field on its own line."""
    value = json_form(row)
    if output_format == "json":
        print_json(value)
        return
    shown = value if isinstance(value, Mapping) else {"value": value}
    pairs = [(key, show_value(field_of(row, key) if key != "data" else item)) for key, item in shown.items()]
    print_fields(pairs, title=title)
