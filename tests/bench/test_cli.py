"""`python -m bench --soak`: which options go with it, and the exit status of a loss."""

from __future__ import annotations

import pytest

from bench import cli
from bench.soak import SoakOptions
from bench.soak_report import SoakReport


def _report(*, created: int, received: int) -> SoakReport:
    report = SoakReport("serve", "sqlite", fanout=2, rate_per_s=50.0, duration_s=60.0)
    report.created, report.received = created, received
    return report


@pytest.mark.parametrize(
    "argv",
    [
        ["--rate", "10"],
        ["--soak-topology", "serve"],
        ["--soak", "1", "--quick"],
        ["--soak", "0"],
        ["--soak", "1", "--soak-topology", "serve", "--redis-url", "redis://127.0.0.1:6379/0"],
    ],
)
def test_options_that_do_not_go_together_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)

    assert exited.value.code == 2


def test_a_lost_delivery_is_the_exit_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[SoakOptions] = []

    def soak(options: SoakOptions) -> list[SoakReport]:
        ran.append(options)
        return [_report(created=10, received=20), _report(created=10, received=19)]

    monkeypatch.setattr(cli, "soak", soak)

    with pytest.raises(SystemExit) as exited:
        cli.main(["--soak", "1", "--no-progress"])

    assert exited.value.code == cli.LOST_EXIT
    assert ran[0].topologies == ("serve", "procfile")
    assert "1 deliveries lost" in capsys.readouterr().err


def test_nothing_lost_exits_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "soak", lambda options: [_report(created=10, received=20)])

    cli.main(["--soak", "0.5", "--soak-topology", "procfile", "--json"])
