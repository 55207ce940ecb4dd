"""AMQP URLs naming several nodes, for tests: a live broker with nodes that are down."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from devtools.embedded_mongo import free_port


def with_nodes_down(amqp_url: str, *, before: int = 1, after: int = 0) -> str:
    """`amqp_url` (one node) with `before` nodes that refuse connections put ahead of it and
    `after` behind it: `amqp://u:p@127.0.0.1:DEAD,LIVE/vhost`."""
    parts = urlsplit(amqp_url)
    userinfo, _, live = parts.netloc.rpartition("@")
    dead = [f"127.0.0.1:{free_port()}" for _ in range(before + after)]
    hosts = ",".join([*dead[:before], live, *dead[before:]])
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{hosts}"))


def all_nodes_down(amqp_url: str, count: int = 2) -> str:
    """`amqp_url`'s account and vhost on `count` nodes that all refuse connections."""
    parts = urlsplit(amqp_url)
    userinfo = parts.netloc.rpartition("@")[0]
    hosts = ",".join(f"127.0.0.1:{free_port()}" for _ in range(count))
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{hosts}"))
