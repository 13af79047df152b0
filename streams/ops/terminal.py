"""Progress on the terminal (stderr) while an operation runs, and its summary (stdout) at the end.

On a terminal the progress line is redrawn in place; piped into a file it becomes one line every
few seconds, so that logs of long operations stay readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO


def rate(count: int, seconds: float, unit: str = "") -> str:
    """``1,234 events/s``; a dash when no time passed."""
    if seconds <= 0:
        return "-"
    return f"{count / seconds:,.0f} {unit}/s" if unit else f"{count / seconds:,.0f}/s"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs:02d} s"


class Progress:
    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None) -> None:
        self.label, self.total = label, total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every_s = 0.2 if self.tty else 5.0
        self.started = time.monotonic()
        self._last = 0.0
        self._width = 0

    def _render(self, done: int, note: str) -> str:
        elapsed = time.monotonic() - self.started
        parts = [self.label]
        if self.total:
            parts.append(f"{done:,}/{self.total:,} ({100 * done / self.total:.0f}%)")
        else:
            parts.append(f"{done:,}")
        parts.append(rate(done, elapsed))
        parts.append(duration(elapsed))
        if note:
            parts.append(note)
        return "  ".join(parts)

    def update(self, done: int, note: str = "", *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        text = self._render(done, note)
        if self.tty:
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def say(self, text: str) -> None:
        """A line of its own (an event worth keeping on screen), above the progress line."""
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self, done: int, note: str = "") -> None:
        self.update(done, note, force=True)
        if self.tty:
            self.stream.write("\n")
            self._width = 0
        self.stream.flush()


def summary(title: str, rows: Sequence[tuple[str, str]], stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    width = max((len(k) for k, _ in rows), default=0)
    out.write(f"{title}\n")
    for key, value in rows:
        out.write(f"  {key.ljust(width)}  {value}\n")
    out.flush()
