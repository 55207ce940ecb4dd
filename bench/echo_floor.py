"""The broker's own floor for a request and its reply: `uv run python -m bench.echo_floor`
(docs/benchmarks.md, "Targets not met, and why"). Not part of `make bench`.

An echo consumer in a process of its own (aio-pika, no worker, no MongoDB; prefetch 256;
it publishes `{"success": true}` to the request's `reply_to` and then acks, as the worker
does) answers the same open loop as `rpc_get` (`RpcClient.open_loop`, 200 requests/s for
10 s after 1 s of warm-up) through a quorum queue and through a classic queue, in turn,
`ECHO_ROUNDS` times (3). Prints p50 and p99 of each run.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.amqp import RpcClient
from bench.infra import infrastructure, log
from bench.numbers import ms, percentile

QUEUES: dict[str, dict[str, Any]] = {
    "quorum": {"x-queue-type": "quorum"},
    "classic": {"x-queue-type": "classic"},
}
RATE = 200.0
SECONDS = 10
LOGS = Path(".bench/echo-floor")


async def serve(url: str) -> None:
    """Echo every request of both queues until killed."""
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=False)
    await channel.set_qos(prefetch_count=256)

    async def echo(message: AbstractIncomingMessage) -> None:
        await channel.default_exchange.publish(
            aio_pika.Message(
                b'{"success": true}',
                content_type="application/json",
                correlation_id=message.correlation_id,
            ),
            routing_key=message.reply_to or "",
        )
        await message.ack()

    for name in QUEUES:
        queue = await channel.get_queue(f"echo.{name}", ensure=False)
        await queue.consume(echo)
    await asyncio.Future()  # until killed


async def declare(url: str) -> None:
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    orders = await channel.declare_exchange("orders", aio_pika.ExchangeType.TOPIC, durable=True)
    for name, arguments in QUEUES.items():
        queue = await channel.declare_queue(f"echo.{name}", durable=True, arguments=arguments)
        await queue.bind(orders, f"echo.{name}")
    await connection.close()


async def measure(url: str) -> None:
    await asyncio.sleep(2.0)  # the echo process connects
    async with RpcClient.connect(url) as client:
        for round in range(1, int(os.environ.get("ECHO_ROUNDS", "3")) + 1):
            for name in QUEUES:
                key = f"echo.{name}"
                await client.open_loop(key, lambda i: {"i": i}, rate=RATE, count=int(RATE))
                result = await client.open_loop(
                    key, lambda i: {"i": i}, rate=RATE, count=int(RATE * SECONDS)
                )
                log(
                    f"round {round}, {name} queue: p50 "
                    f"{ms(percentile(result.latencies_s, 50))} ms, p99 "
                    f"{ms(percentile(result.latencies_s, 99))} ms, lost {result.lost}"
                )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        asyncio.run(serve(sys.argv[2]))
        return
    with infrastructure(LOGS) as infra:
        asyncio.run(declare(infra.amqp_url))
        echo = [sys.executable, "-m", "bench.echo_floor", "--serve", infra.amqp_url]
        server = subprocess.Popen(echo)  # noqa: S603 - this module, fixed arguments
        try:
            asyncio.run(measure(infra.amqp_url))
        finally:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
