"""Who is asking: the client address of a request, as a limit should count it.

``REMOTE_ADDR`` is the peer that opened the connection. Behind a load balancer
or reverse proxy that peer is the proxy, and the client is named in
``X-Forwarded-For`` (or the header set in ``CLIENT_IP_HEADER``). That header is
written by whoever sends the request, so it is believed only as far as it was
written by proxies this site trusts (``TRUSTED_PROXIES``): it is read right to
left, each hop written by a trusted proxy is passed over, and the first address
not in a trusted network is the client. A malformed hop ends the walk (nothing
to its left can be trusted); no header, however long or strange, raises.

IPv6 clients usually hold a whole /64 (and often much more), so by default an
IPv6 address is counted as its /64 network (``RATELIMIT_IPV6_PREFIX``).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from django.http import HttpRequest

from .conf import settings

logger = logging.getLogger("django_stability.ratelimit")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: At most this many characters of a forwarding header are read (a header
#: crafted to be huge costs no more than a short one).
MAX_HEADER_CHARS = 2048
#: At most this many hops are walked, from the right.
MAX_HOPS = 32
#: The key used for a request whose peer address is missing or malformed
#: (e.g. a Unix socket without a proxy header): such requests share one counter.
UNKNOWN = "unknown"

_CACHE_ATTR = "_stability_client_ip"
_KEY_ATTR = "_stability_client_key"


def parse_networks(raw: Any) -> tuple[IPNetwork, ...]:
    """Networks in CIDR notation (``10.0.0.0/8``, ``2001:db8::/32``, a bare address).

    Raises ValueError naming the entry that is not one.
    """
    if isinstance(raw, str):
        items: Iterable[Any] = [p for line in raw.splitlines() for p in line.split(",")]
    elif isinstance(raw, (list, tuple)):
        items = raw
    else:
        raise ValueError(f"Expected a list of networks such as 10.0.0.0/8; got {raw!r}.")
    networks = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(
                f"Expected networks in CIDR notation, e.g. 10.0.0.0/8 or 2001:db8::/32, "
                f"one per line; {text!r} is not one."
            ) from None
    return tuple(networks)


def parse_address(text: str) -> IPAddress | None:
    """An address from a header hop (``1.2.3.4``, ``1.2.3.4:80``, ``[2001:db8::1]:443``) or None."""
    text = text.strip().strip('"')
    if not text or len(text) > 64:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]  # IPv4 with a port
    if "%" in text:
        text = text.split("%", 1)[0]  # an IPv6 zone index says nothing about the client
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=8)
def _trusted(raw: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return parse_networks(list(raw))


def trusted_proxies() -> tuple[IPNetwork, ...]:
    """The networks of ``TRUSTED_PROXIES``, parsed once per distinct setting."""
    return _trusted(tuple(settings.TRUSTED_PROXIES))


def is_in(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    """True when ``address`` is in one of ``networks`` (of the same family)."""
    return any(address.version == net.version and address in net for net in networks)


def client_address(
    remote_addr: str | None,
    forwarded: str | None,
    trusted: tuple[IPNetwork, ...],
) -> IPAddress | None:
    """The client's address from the peer address and a forwarding header (a pure function).

    Walks ``forwarded`` right to left only while each hop was appended by a
    trusted proxy; the first untrusted hop is the client.
    """
    peer = parse_address(remote_addr or "")
    if peer is None or not trusted or not forwarded or not is_in(peer, trusted):
        return peer
    client = peer
    hops = forwarded[-MAX_HEADER_CHARS:].split(",")
    if len(forwarded) > MAX_HEADER_CHARS:
        hops = hops[1:]  # the first piece was cut in the middle
    for hop in reversed(hops[-MAX_HOPS:]):
        address = parse_address(hop)
        if address is None:
            break  # garbage: nothing to its left was written by a proxy we trust
        client = address
        if not is_in(address, trusted):
            break
    return client


def group_address(address: IPAddress, ipv4_prefix: int, ipv6_prefix: int) -> str:
    """The address as counted: its network of the configured prefix, without the length if whole."""
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    if prefix >= address.max_prefixlen:
        return str(address)
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    return str(network)


def client_ip(request: HttpRequest) -> IPAddress | None:
    """The client's address (memoised on the request); None when it cannot be known."""
    cached = request.__dict__.get(_CACHE_ATTR, False)
    if cached is not False:
        return cached  # type: ignore[no-any-return]
    header = "HTTP_" + settings.CLIENT_IP_HEADER.upper().replace("-", "_")
    meta = request.META
    address = client_address(meta.get("REMOTE_ADDR"), meta.get(header), trusted_proxies())
    request.__dict__[_CACHE_ATTR] = address
    return address


def client_key(request: HttpRequest) -> str:
    """The client as a rate-limit key: its address, IPv6 grouped per network; never raises."""
    cached: str | None = request.__dict__.get(_KEY_ATTR)
    if cached is not None:
        return cached
    address = client_ip(request)
    key = (
        UNKNOWN
        if address is None
        else group_address(address, settings.RATELIMIT_IPV4_PREFIX, settings.RATELIMIT_IPV6_PREFIX)
    )
    request.__dict__[_KEY_ATTR] = key
    return key
