"""The console of Kedro's rich log handler in ``conf/logging.yml``, at the terminal's width.

Rich wraps log lines at 80 columns whenever it sees no terminal on stdout (``kedro run | tee log``, an IDE
console, CI) or a "dumb" one. :data:`console` is measured on stdout, stderr or stdin, and is
:data:`FALLBACK_WIDTH` wide when none of them is a terminal; ``COLUMNS`` still wins, as with rich itself.
``conf/logging.yml`` hands it to ``kedro.logging.RichHandler`` as ``console: ext://...`` (Kedro accepts only
logging classes of ``logging`` / ``kedro.logging``, so the handler class stays Kedro's).
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

FALLBACK_WIDTH = 160


def terminal_width(fallback: int = FALLBACK_WIDTH) -> int:
    """``$COLUMNS``, else the width of the first terminal of stdout, stderr, stdin, else ``fallback``."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    for stream in (sys.__stdout__, sys.__stderr__, sys.__stdin__):
        try:
            width = os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            continue
        if width > 0:
            return width
    return fallback


console = Console(width=terminal_width())
