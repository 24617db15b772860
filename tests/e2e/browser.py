"""Headless Chromium for end-to-end tests: Debian's `/usr/bin/chromium`, driven through
Playwright's Python package (which never downloads a browser here: the executable is
given). A missing browser skips locally and fails in CI (`tests.servers.missing`).

Playwright starts its driver, and the driver Chromium, as processes: only tests marked
`e2e` may use this (the guard of `tests/conftest.py` fails any other)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.servers import missing

CHROMIUM = os.environ.get("WEBHOOKS_TEST_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
DEFAULT_TIMEOUT_MS = 15_000
# Set to a folder (e.g. `docs`) to keep the screenshots the tests take there too.
SCREENSHOTS_DIR = os.environ.get("WEBHOOKS_SCREENSHOTS_DIR")


class Chromium:
    """Opens browser contexts, each a fresh Chromium with a user-data-dir of its own
    under `root`; all are closed when the `chromium()` block ends."""

    def __init__(self, playwright: Any, root: Path) -> None:
        self._playwright = playwright
        self._root = root
        self._opened: list[Any] = []

    def open(self, name: str, **options: Any) -> Any:
        """A new browser context; `options` are Playwright's (viewport, color_scheme...)."""
        context = self._playwright.chromium.launch_persistent_context(
            str(self._root / name),
            executable_path=CHROMIUM,
            headless=True,
            args=LAUNCH_ARGS,
            **options,
        )
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        self._opened.append(context)
        return context

    def close(self) -> None:
        for context in self._opened:
            context.close()


@contextmanager
def chromium(root: Path) -> Iterator[Chromium]:
    """Playwright over Debian's Chromium, for the block's length."""
    if shutil.which(CHROMIUM) is None:
        missing(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browsers = Chromium(playwright, root)
        try:
            yield browsers
        finally:
            browsers.close()


class Console:
    """What a page reported that a person would not see: script errors, and the
    browser's refusals (a CSP violation among them)."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        text = message.text
        # An error page's own status is logged as a failed load: that is the page.
        if message.type == "error" and "the server responded with a status of" not in text:
            self.errors.append(text)


def screenshot(page: Any, folder: Path, name: str, *, full_page: bool = True) -> Path:
    """`name`.png in `folder`, and in `WEBHOOKS_SCREENSHOTS_DIR` too when it is set,
    there made about a third as large by `pngquant` if it is installed."""
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if SCREENSHOTS_DIR:
        kept = Path(SCREENSHOTS_DIR) / path.name
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, kept)
        if shutil.which("pngquant"):
            quantize = ["pngquant", "--quality", "70-95", "--strip", "--force", "--output"]
            subprocess.run([*quantize, str(kept), str(kept)], check=True, timeout=60)
    return path
