"""`webhooks prune --older-than`: the durations it takes, and the command itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from commands.common import parse_duration_s
from tests.processes import process_env, run_webhooks

# --- durations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("12h", 12 * 3600),
        ("15m", 15 * 60),
        ("45s", 45),
        ("2w", 14 * 86400),
        ("3600", 3600),
        ("0s", 0),
        ("0", 0),
        (" 7D ", 7 * 86400),
        ("90 d", 90 * 86400),
    ],
)
def test_parse_duration_accepts_a_number_with_a_unit(text: str, seconds: int) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "d", "3x", "1.5h", "-1d", "1d2h", "30 days", "ten", "1e3", "0x10"]
)
def test_parse_duration_rejects_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_s(text)


# --- the command ------------------------------------------------------------------------


@pytest.mark.e2e
def test_webhooks_prune_prints_the_counts_as_json(tmp_path: Path) -> None:
    env = process_env(DATABASE_URL=f"sqlite:///{tmp_path / 'prune.db'}")

    result = run_webhooks("prune", "--older-than", "0s", env=env)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "deliveries": 0,
        "attempts": 0,
        "outbox": 0,
        "idempotency_keys": 0,
    }


@pytest.mark.e2e
@pytest.mark.parametrize("duration", ["3x", "-5d", "soon"])
def test_webhooks_prune_with_a_bad_duration_exits_1_with_a_clear_message(
    tmp_path: Path, duration: str
) -> None:
    env = process_env(DATABASE_URL=f"sqlite:///{tmp_path / 'prune.db'}")

    result = run_webhooks("prune", "--older-than", duration, env=env)

    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"webhooks: not a duration: {duration!r} (use e.g. 30d, 12h, 15m, 3600)"
    )


@pytest.mark.e2e
@pytest.mark.parametrize("duration", ["1000000d", "99999999999999999999"])
def test_webhooks_prune_with_a_duration_beyond_the_calendar_exits_1_with_a_clear_message(
    tmp_path: Path, duration: str
) -> None:
    """A cutoff before year 1 cannot be computed: a message, not a traceback."""
    env = process_env(DATABASE_URL=f"sqlite:///{tmp_path / 'prune.db'}")

    result = run_webhooks("prune", "--older-than", duration, env=env)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr[-500:]
    assert result.stderr.strip().splitlines()[-1].startswith("webhooks: "), result.stderr[-500:]
