"""`core.targets`: the one SSRF rule, for every spelling of an address."""

from __future__ import annotations

import ipaddress

import pytest

from core.targets import blocked_address, blocked_hostname, host_is_blocked, literal_address


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("0", "0.0.0.0"),
    ],
)
def test_literal_address_reads_every_spelling(host: str, address: str) -> None:
    assert literal_address(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize("host", ["example.com", "no-such-host.invalid", "1.2.3.4.5", ""])
def test_names_are_not_literal_addresses(host: str) -> None:
    assert literal_address(host) is None


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fc00::1",
        "fe80::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "::127.0.0.1",  # IPv4-compatible
    ],
)
def test_non_global_addresses_are_blocked(address: str) -> None:
    assert blocked_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808"]
)
def test_global_addresses_are_allowed(address: str) -> None:
    assert not blocked_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST.", "a.b.localhost", "x.localhost."])
def test_localhost_names_are_blocked(host: str) -> None:
    assert blocked_hostname(host)


@pytest.mark.parametrize("host", ["localhost.example.com", "notlocalhost", "example.com"])
def test_other_names_are_not_blocked_by_name(host: str) -> None:
    assert not blocked_hostname(host)


async def test_an_unresolvable_name_is_not_blocked_now() -> None:
    assert not await host_is_blocked("no-such-host.invalid")


@pytest.mark.parametrize("host", ["localhost", "127.1", "[::1]", "169.254.169.254"])
async def test_host_is_blocked(host: str) -> None:
    assert await host_is_blocked(host)
