"""The progress line on stderr: rewritten in place on a terminal, a line every few
seconds otherwise (CI logs, pipes), and nothing on stdout, which `--json` owns."""

from __future__ import annotations

import sys
import time
from typing import TextIO

PLAIN_INTERVAL_S = 3.0


class Progress:
    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self._stream = stream or sys.stderr
        self._enabled = enabled
        self._tty = self._stream.isatty()
        self._started = time.monotonic()
        self._last_plain = 0.0
        self._width = 0

    def show(self, phase: str, detail: str = "", *, force: bool = False) -> None:
        """Replace the line with `[elapsed] phase: detail`."""
        if not self._enabled:
            return
        line = f"[{time.monotonic() - self._started:5.1f}s] {phase}" + (
            f": {detail}" if detail else ""
        )
        if self._tty:
            self._stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            now = time.monotonic()
            if not force and now - self._last_plain < PLAIN_INTERVAL_S:
                return
            self._last_plain = now
            self._stream.write(line + "\n")
        self._stream.flush()

    def step(self, phase: str, detail: str = "") -> None:
        """A new phase: always shown, even off a terminal."""
        self.show(phase, detail, force=True)

    def finish(self) -> None:
        if self._enabled and self._tty and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0
