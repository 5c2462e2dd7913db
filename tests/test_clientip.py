"""The client address: trusted proxies right to left, spoofing, malformed headers, IPv6 /64."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_stability.clientip import (
    UNKNOWN,
    client_address,
    client_key,
    group_address,
    parse_address,
    parse_networks,
)

PROXIES = parse_networks(["10.0.0.0/8", "2001:db8:ffff::/48"])


def addr(text: str) -> Any:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("remote", "forwarded", "expected"),
    [
        # No trusted peer: the header is ignored, whatever it says.
        ("198.51.100.7", "1.2.3.4", "198.51.100.7"),
        # One trusted proxy: the hop it appended is the client.
        ("10.0.0.1", "203.0.113.9", "203.0.113.9"),
        # The client prepends a spoofed value: the proxy appends the real one last.
        ("10.0.0.1", "1.1.1.1, 203.0.113.9", "203.0.113.9"),
        # Two trusted proxies in a chain.
        ("10.0.0.1", "1.1.1.1, 203.0.113.9, 10.2.3.4", "203.0.113.9"),
        # Ports and brackets are stripped; IPv4-mapped IPv6 becomes IPv4.
        ("10.0.0.1", "203.0.113.9:5555", "203.0.113.9"),
        ("10.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:10.0.0.1", "::ffff:203.0.113.9", "203.0.113.9"),
        # Malformed hops end the walk: the last trusted hop stands.
        ("10.0.0.1", "203.0.113.9, garbage", "10.0.0.1"),
        ("10.0.0.1", "203.0.113.9, not-an-ip, 10.9.9.9", "10.9.9.9"),
        ("10.0.0.1", ",,,", "10.0.0.1"),
        ("10.0.0.1", "", "10.0.0.1"),
        ("10.0.0.1", "unknown, \x00\xff, [::1", "10.0.0.1"),
        # Every hop trusted: the leftmost is the best we know.
        ("10.0.0.1", "10.1.1.1, 10.2.2.2", "10.1.1.1"),
        # A trusted IPv6 proxy.
        ("2001:db8:ffff::2", "2001:db8:1:2:3::4", "2001:db8:1:2:3::4"),
    ],
)
def test_client_address(remote: str, forwarded: str, expected: str) -> None:
    assert client_address(remote, forwarded, PROXIES) == addr(expected)


@pytest.mark.parametrize("remote", ["", None, "unix:/tmp/sock", "999.1.1.1"])
def test_a_missing_or_malformed_peer_gives_none(remote: Any) -> None:
    assert client_address(remote, "203.0.113.9", PROXIES) is None


def test_a_huge_header_costs_no_more_than_a_short_one() -> None:
    spoof = ", ".join(f"1.2.{i % 250}.{i % 200}" for i in range(100_000))
    assert client_address("10.0.0.1", spoof + ", 203.0.113.9", PROXIES) == addr("203.0.113.9")
    # Only trusted hops for 100,000 entries: the walk stops after MAX_HOPS.
    trusted_flood = ", ".join(["10.1.1.1"] * 100_000)
    assert client_address("10.0.0.1", trusted_flood, PROXIES) == addr("10.1.1.1")


def test_ipv6_is_grouped_per_64_and_ipv4_kept_whole() -> None:
    assert group_address(addr("2001:db8:1:2:aaaa::1"), 32, 64) == "2001:db8:1:2::/64"
    assert group_address(addr("2001:db8:1:2:bbbb::9"), 32, 64) == "2001:db8:1:2::/64"
    assert group_address(addr("203.0.113.9"), 32, 64) == "203.0.113.9"
    assert group_address(addr("203.0.113.9"), 24, 64) == "203.0.113.0/24"


def test_parse_address_refuses_what_is_not_an_address() -> None:
    for text in ["", "x" * 100, "1.2.3", "[::1", "fe80::1%eth0"]:
        result = parse_address(text)
        assert result is None or result == addr("fe80::1")


def test_parse_networks_names_the_bad_entry() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not one"):
        parse_networks("10.0.0.0/8\n10.0.0.0/33")


def test_client_key_from_a_request(rf: Any) -> None:
    request = rf.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.1.1.1, 203.0.113.9")
    with override_settings(STABILITY={"TRUSTED_PROXIES": ["10.0.0.0/8"]}):
        assert client_key(request) == "203.0.113.9"
    request = rf.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert client_key(request) == "10.0.0.1"  # no trusted proxies: the header means nothing
    request = rf.get("/", REMOTE_ADDR="")
    assert client_key(request) == UNKNOWN
    request = rf.get("/", REMOTE_ADDR="2001:db8:1:2:3:4:5:6")
    assert client_key(request) == "2001:db8:1:2::/64"


def test_another_header_can_be_named(rf: Any) -> None:
    request = rf.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_REAL_IP="203.0.113.9")
    with override_settings(
        STABILITY={"TRUSTED_PROXIES": ["10.0.0.0/8"], "CLIENT_IP_HEADER": "X-Real-IP"}
    ):
        assert client_key(request) == "203.0.113.9"


def test_bad_trusted_proxies_setting_is_refused() -> None:
    from django_stability.conf import merge

    with pytest.raises(ImproperlyConfigured, match="TRUSTED_PROXIES"):
        merge({"TRUSTED_PROXIES": ["10.0.0.0/8", "proxy.internal"]})
    with pytest.raises(ImproperlyConfigured, match=r"from 1 to 128"):
        merge({"RATELIMIT_IPV6_PREFIX": 129})
