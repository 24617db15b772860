"""Running the real `webhooks` command: one-shot commands and `web` servers over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
WEBHOOKS = str(BIN / "webhooks")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# Every variable the service reads: a test sets exactly the ones it means.
_SETTINGS = ("DATABASE_URL", "REDIS_URL", "PORT")


def process_env(**values: str) -> dict[str, str]:
    """This environment without any service setting, plus `values`; the venv on PATH."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _SETTINGS and not key.startswith("WEBHOOKS_")
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(values)
    return env


def run_webhooks(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WEBHOOKS, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def webhooks_ok(*args: str, env: dict[str, str]) -> str:
    """`webhooks ARGS` exits 0 without a traceback; returns its standard output."""
    result = run_webhooks(*args, env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def webhooks_fails(*args: str, env: dict[str, str], mentions: str) -> str:
    """`webhooks ARGS` exits 1 with a short message on stderr that contains `mentions`,
    and no traceback; returns its standard error."""
    result = run_webhooks(*args, env=env)
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert mentions in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr
    return result.stderr


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group this test started, SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait_healthy(process: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"web exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"web did not answer /healthz in {START_TIMEOUT_S}s:\n{log.read_text()}")


@contextmanager
def web_server(
    command: Sequence[str], *, env: dict[str, str], port: int, log: Path
) -> Iterator[str]:
    """Start `command` (which serves on `port`), wait for /healthz, yield its base URL;
    stop it, whatever happens."""
    base_url = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        process = subprocess.Popen(
            list(command), env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_healthy(process, base_url, log)
        yield base_url
    finally:
        _stop(process)
