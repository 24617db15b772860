"""`python -m bench.portal` runs end to end: it fills a real database through the
lifecycle's row maker and times every portal page against a real `web`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_the_portal_bench_times_every_page() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.portal", "--deliveries", "150", "--requests", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert (report["backend"], report["deliveries"]) == ("sqlite", 150)
    assert len(report["pages"]) >= 8
    assert all(page["p50_ms"] > 0 and page["kb"] > 0 for page in report["pages"].values())
