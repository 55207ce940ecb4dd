"""A RabbitMQ URL that names every node of a cluster, as MongoDB and PostgreSQL URLs do.

``amqp://user:password@host1:5672,host2:5672,host3:5672/vhost?heartbeat=30`` is the URL
``amqp://user:password@hostN:5672/vhost?heartbeat=30`` of each node, in that order: one
account, one vhost and one set of options for the whole cluster. A client connects to the
first node that answers and, when that connection is lost, to the next. A URL with one host
is an ordinary AMQP URI.
"""

from __future__ import annotations

from urllib.parse import urlsplit

SCHEMES = ("amqp", "amqps")


class BrokerUrlError(ValueError):
    """Not a RabbitMQ URL; the message never repeats the credentials."""


def node_urls(url: str) -> list[str]:
    """The URL of each node named in `url`, in order (one element for a one-host URL)."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in SCHEMES:
        raise BrokerUrlError("a RabbitMQ URL starts with amqp:// or amqps://")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host_list = authority.rpartition("@")
    hosts = host_list.split(",")
    for host in hosts:
        _check_host(host)
    return [f"{scheme}://{userinfo}{at}{host}{tail}" for host in hosts]


def hosts(url: str) -> list[str]:
    """`host:port` of each node of `url` (as written; no credentials), for messages."""
    return [urlsplit(node).netloc.rpartition("@")[2] for node in node_urls(url)]


def _check_host(host: str) -> None:
    if not host:
        raise BrokerUrlError("empty host in the RabbitMQ URL's host list (host1:port,host2:port)")
    try:
        parsed = urlsplit(f"amqp://{host}")
        port = parsed.port
    except ValueError as exc:
        raise BrokerUrlError(f"invalid host {host!r} in the RabbitMQ URL: {exc}") from None
    if not parsed.hostname or (port is not None and not 0 < port < 65536):
        raise BrokerUrlError(f"invalid host {host!r} in the RabbitMQ URL")
