"""Where the server may send requests on a rule's behalf (webhooks): public addresses only.

A webhook is a request the server makes with its own network position, so by default it may
not reach what only the server can reach: loopback, link-local (the cloud metadata service at
169.254.169.254), private (RFC 1918, unique local), shared (100.64/10), multicast, reserved
and unspecified addresses, nor the server's own API. The ``[server] webhook_allow`` list opens
exceptions, each one of:

- an address or a CIDR: ``10.1.2.3``, ``10.0.0.0/8``, ``fd00::/8``;
- a host name: ``hooks.internal`` (whatever it resolves to: the admin vouches for the name);
- either with a port: ``127.0.0.1:9000``, ``[::1]:9000``, ``hooks.internal:8443`` (only that
  port; without one, any port).

The server's own API (its address and port) is refused unless an entry names that port.

This module is the pure policy (:meth:`Egress.refusal` over addresses already resolved);
resolving names and connecting to the checked address is :mod:`bridgehead.rules.webhook`'s.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class _Entry:
    network: Network | None
    host: str | None
    port: int | None

    def admits(self, host: str, address: Address, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            return self.host == host
        assert self.network is not None
        return address.version == self.network.version and address in self.network


def parse_entry(text: str) -> _Entry:
    """One allow-list entry; ``ValueError`` naming it when it is none of the forms."""
    raw = text.strip()
    host, port = raw, None
    if raw.startswith("["):  # [v6]:port
        inside, _, rest = raw[1:].partition("]")
        host, port = inside, _port(rest.removeprefix(":"), text) if rest else None
    elif raw.count(":") == 1:
        host, _, tail = raw.partition(":")
        port = _port(tail, text)
    try:
        return _Entry(ipaddress.ip_network(host, strict=False), None, port)
    except ValueError:
        pass
    name = host.lower().rstrip(".")
    labels = name.split(".")
    if not name or "/" in name or not all(
            label and len(label) <= 63 and all(c.isalnum() or c == "-" for c in label)
            for label in labels):
        raise ValueError(f"{text!r} is not an address, a CIDR or a host name (optionally "
                         "with :port), e.g. 10.0.0.0/8, 127.0.0.1:9000, hooks.internal")
    return _Entry(None, name, port)


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{entry!r}: the port must be 1 to 65535")
    return int(text)


def kind_of(address: Address) -> str | None:
    """Why ``address`` is not a public one (``"loopback"``, ``"private"``...), None if it
    is."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        return kind_of(mapped)
    for kind, test in (("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
                       ("link-local", address.is_link_local), ("multicast", address.is_multicast),
                       ("private", address.is_private), ("reserved", address.is_reserved)):
        if test:
            return kind
    return None if address.is_global else "non-public"


@dataclass(frozen=True, slots=True)
class Egress:
    """The allow-list and the server's own API (``own``: its addresses and ``own_port``)."""

    allow: tuple[_Entry, ...] = ()
    own: frozenset[Address] = field(default_factory=frozenset)
    own_port: int | None = None

    @classmethod
    def of(cls, allow: Iterable[str] = (), *, own: Iterable[str] = (),
           own_port: int | None = None) -> Egress:
        """``ValueError`` naming a bad entry."""
        return cls(tuple(parse_entry(e) for e in allow),
                   frozenset(ipaddress.ip_address(a) for a in own), own_port)

    def refusal(self, host: str, port: int, addresses: Sequence[str]) -> str | None:
        """Why a request to ``host:port``, resolved to ``addresses``, is refused (None: it may
        go to any of them). Every address must pass: a name with one private address among
        public ones is refused (the connection could land on it)."""
        name = host.lower().rstrip(".").strip("[]")
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            allowed = [e for e in self.allow if e.admits(name, address, port)]
            if (self.own_port == port and address in self.own) or (
                    self.own_port == port and address.is_loopback and self._loopback_own()):
                if not any(e.port == port for e in allowed):
                    return f"{host}:{port} is this server's own API"
                continue
            kind = kind_of(address)
            if kind is not None and not allowed:
                via = "" if text == name else f" resolves to {text}, which"
                return (f"{host}{via} is a {kind} address: webhooks may reach public addresses "
                        "only, unless [server] webhook_allow lists it")
        return None

    def _loopback_own(self) -> bool:
        """Whether the server listens on loopback (or on every address)."""
        return any(a.is_loopback or a.is_unspecified for a in self.own)
