"""Which network addresses an http(s) source may reach.

Manifests are untrusted, and a job runs where cloud credentials, instance metadata and
internal services are one request away. So, as image proxies do, a source may not reach
loopback, private, link-local (the metadata address 169.254.169.254 among them),
shared (carrier-grade NAT), multicast, reserved or unspecified addresses, in IPv4 or
IPv6 (IPv4-mapped IPv6 included), unless the trusted config allows it
(``input.http.allow_private_networks``, ``input.http.allowed_hosts``).

The check is made on the address actually connected to: the host is resolved once, every
address it resolves to is checked, and the connection goes to one of those addresses
(TLS still verifies the host name), so a second DNS answer cannot slip in between. The
HTTP client checks every redirect hop the same way (``sources.HttpClient``).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

# how host names are resolved: tests replace it (a public-looking name that resolves to a
# private address, with no DNS server and no /etc/hosts)
RESOLVE = socket.getaddrinfo

SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: a provider's inside


class SourceRefused(Exception):
    """A source the policy does not let this job reach; the message names the rule."""


def rule_of(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """The rule that forbids ``ip``, or None when it is a public address."""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (where cloud instance metadata is served)"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.version == 4 and ip in SHARED:
        return "a shared (carrier-grade NAT) address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    return None


@dataclass(frozen=True)
class NetPolicy:
    """What the trusted config lets sources reach beyond the public internet."""

    allow_private: bool = False
    allowed_hosts: tuple[str, ...] = ()

    @classmethod
    def of(cls, http_cfg) -> NetPolicy:
        return cls(
            http_cfg.allow_private_networks, tuple(h.lower() for h in http_cfg.allowed_hosts)
        )

    def _listed(self, host: str, ip) -> bool:
        for item in self.allowed_hosts:
            if "/" in item:
                if ip in ipaddress.ip_network(item, strict=False):
                    return True
            elif host.lower().rstrip(".") == item.rstrip("."):
                return True
        return False

    def check(self, host: str, ip) -> None:
        """Raise ``SourceRefused`` unless ``host`` at ``ip`` may be reached."""
        if self.allow_private:
            return
        rule = rule_of(ip)
        if rule is not None and not self._listed(host, ip):
            raise SourceRefused(
                f"{host} resolves to {ip}, {rule}: sources may not reach private networks; allow it "
                "with input.http.allow_private_networks or list it in input.http.allowed_hosts"
            )

    def addresses(self, host: str, port: int) -> list[tuple]:
        """Every address ``host`` resolves to, checked; (family, sockaddr) to connect to."""
        try:
            infos = RESOLVE(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise OSError(f"cannot resolve {host}: {e}") from None
        out = []
        for family, _, _, _, sockaddr in infos:
            self.check(host, ipaddress.ip_address(sockaddr[0].split("%")[0]))
            out.append((family, sockaddr))
        if not out:
            raise OSError(f"{host} resolves to no address")
        return out


def guarded_pool_manager(policy: NetPolicy, **kwargs):
    """A urllib3 ``PoolManager`` whose connections go only where ``policy`` allows."""
    import urllib3
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    class _Guarded:
        """urllib3's own ``_new_conn`` (timeouts, socket options, error mapping), but only
        ever to an address resolved and checked here: the IP is put where the host name
        was (TLS keeps checking the host name)."""

        def _new_conn(self):
            host = self._dns_host
            last: Exception | None = None
            for _, sockaddr in policy.addresses(host, self.port):
                self._dns_host = sockaddr[0]
                try:
                    return super()._new_conn()
                except (NewConnectionError, ConnectTimeoutError) as e:
                    last = e
                finally:
                    self._dns_host = host
            raise last

    class GuardedHTTP(_Guarded, HTTPConnection):
        pass

    class GuardedHTTPS(_Guarded, HTTPSConnection):
        pass

    class HTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTP

    class HTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPS

    manager = urllib3.PoolManager(**kwargs)
    manager.pool_classes_by_scheme = {"http": HTTPPool, "https": HTTPSPool}
    return manager
