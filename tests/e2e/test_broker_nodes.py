"""The worker process and the client on a URL naming several RabbitMQ nodes, the first of
them down (as a cluster with a node stopped): both work through the node that answers."""

from __future__ import annotations

from pathlib import Path

from orders_client import OrdersClient
from schemas import PlaceOrder
from tests.broker_urls import with_nodes_down

from .amqp_client import AmqpClient
from .contract import new_customer_id, simple_order
from .worker import new_database, start_worker, stop_worker, wait_until_ready


async def test_the_worker_and_the_client_skip_the_nodes_that_are_down(
    amqp_url: str, mongo_url: str, amqp_client: AmqpClient, tmp_path: Path
) -> None:
    url = with_nodes_down(amqp_url, before=2, after=1)
    worker = start_worker(url, mongo_url, new_database(), tmp_path / "worker.log")
    try:
        await amqp_client.ensure_open()
        await wait_until_ready(amqp_client, worker)
        async with OrdersClient(url, timeout=10) as orders:
            placed = await orders.place(PlaceOrder.model_validate(simple_order(new_customer_id())))
            assert (await orders.get(placed.id)).order_id == placed.order_id
    finally:
        assert stop_worker(worker) == 0
    assert "guest:guest" not in (tmp_path / "worker.log").read_text()
