"""One progress mechanism for every long loop: a tqdm bar with rate and ETA on a terminal, and
one plain line per interval where the output is a pod log or a file (a carriage-return bar
would garble those into one line that grows without end)."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm

# seconds between lines where the output is not a terminal: a 20,000-step run logs tens of
# lines, not one per step
LOG_INTERVAL = 30.0


class _Log:
    """The output, less the lone newline tqdm writes on closing (a blank line in the log)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write(self, text: str) -> None:
        if text != "\n":
            self.out.write(text)

    def flush(self) -> None:
        self.out.flush()


class _Lines(tqdm):
    """tqdm that writes each refresh as its own line."""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        text = (self.__str__() if msg is None else msg).rstrip()
        if text.strip() and self.n != getattr(self, "_last_n", None):  # close repeats the last
            self.fp.write(text + "\n")
            self.fp.flush()
            self._last_n = self.n
        return True


def progress(total: int | None, desc: str, unit: str = "it", file: TextIO | None = None,
             interval: float | None = None, **kwargs: Any) -> tqdm:
    """A bar over `total` units; close it (or use it as a context manager) to print the last
    figures. `interval`: seconds between refreshes (none: live on a terminal, LOG_INTERVAL
    elsewhere)."""
    out = sys.stdout if file is None else file
    live = hasattr(out, "isatty") and out.isatty()
    cls = tqdm if live else _Lines
    every = interval if interval is not None else (0.1 if live else LOG_INTERVAL)
    if not live:  # a log line wants the figures, not a drawing of them
        kwargs.setdefault("bar_format", "{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f} %) "
                                        "[{elapsed}<{remaining}, {rate_fmt}{postfix}]"
                          if total else "{desc}: {n_fmt} {unit} [{elapsed}, {rate_fmt}{postfix}]")
    return cls(total=total, desc=f"  {desc}", unit=unit, file=out if live else _Log(out),
               mininterval=every,
               maxinterval=max(every, 10.0), dynamic_ncols=live, **kwargs)
