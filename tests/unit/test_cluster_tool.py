"""devtools/cluster.py without starting anything: the URLs it prints and each node's own
ports, files and name (nothing of the system broker's)."""

from __future__ import annotations

import shlex
from urllib.parse import parse_qs, urlsplit

from devtools import cluster
from orders_vocabulary.broker_url import hosts, node_urls


def test_the_amqp_url_names_the_three_nodes_and_the_vhost() -> None:
    assert hosts(cluster.amqp_url()) == ["127.0.0.1:5682", "127.0.0.1:5683", "127.0.0.1:5684"]
    assert urlsplit(node_urls(cluster.amqp_url("a/b"))[0]).path == "/a%2Fb"
    assert cluster.amqp_url(nodes=[2]) == "amqp://guest:guest@127.0.0.1:5683/"


def test_the_mongo_url_names_the_three_members_and_the_set() -> None:
    url = urlsplit(cluster.mongo_url())
    assert url.netloc == "127.0.0.1:27031,127.0.0.1:27032,127.0.0.1:27033"
    assert parse_qs(url.query) == {"replicaSet": ["rs-cluster"]}


def test_the_exports_are_shell_lines() -> None:
    lines = cluster.exports(cluster.amqp_url(), cluster.mongo_url()).splitlines()
    assert [shlex.split(line) for line in lines] == [
        ["export", f"ORDERS_AMQP_URL={cluster.amqp_url()}"],
        ["export", f"ORDERS_MONGO_URL={cluster.mongo_url()}"],
    ]


def test_each_node_has_its_own_name_ports_and_files() -> None:
    envs = [node.env() for node in cluster.NODES]
    for key in ("RABBITMQ_NODENAME", "RABBITMQ_NODE_PORT", "RABBITMQ_DIST_PORT",
                "RABBITMQ_MNESIA_BASE", "RABBITMQ_LOG_BASE", "RABBITMQ_CONF_ENV_FILE",
                "RABBITMQ_CONFIG_FILE", "RABBITMQ_ENABLED_PLUGINS_FILE"):  # fmt: skip
        assert len({env[key] for env in envs}) == 3, key
    for env in envs:
        for key, value in env.items():
            if key.endswith(("_FILE", "_BASE")) and key.startswith("RABBITMQ_"):
                assert value.startswith(str(cluster.ROOT)), key
        assert env["HOME"] == str(cluster.ROOT / "rabbitmq")  # the cluster's own cookie
    assert [env["RABBITMQ_NODENAME"] for env in envs] == [
        "c1@localhost", "c2@localhost", "c3@localhost",
    ]  # fmt: skip
    assert [env["RABBITMQ_DIST_PORT"] for env in envs] == ["25682", "25683", "25684"]
