"""Admission of ordered deliveries: in delivery-tag order, one order's work in turn, and a
drain on shutdown that admits no more and waits for the admitted ones."""

from __future__ import annotations

import asyncio

from service.worker.admission import Admission
from service.worker.sequencing import Turn


class FakeChannel:
    """What the gate reads of an AMQP channel."""

    def __init__(self) -> None:
        self.is_closed = False


async def _admitted(admission: Admission, channel: FakeChannel, tag: int) -> Turn:
    turn = await admission.admit_ordered(channel, tag)
    assert turn is not None
    return turn


async def _settle() -> None:
    """Let every ready task run until it waits on something."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_deliveries_arriving_out_of_order_are_admitted_in_tag_order() -> None:
    admission = Admission(max_in_flight_bytes=1_000_000)
    channel = FakeChannel()
    admitted: list[int] = []

    async def deliver(tag: int) -> None:
        turn = await _admitted(admission, channel, tag)
        admitted.append(tag)
        admission.release(turn)

    await asyncio.wait_for(asyncio.gather(deliver(3), deliver(2), deliver(1)), 5)

    assert admitted == [1, 2, 3]


async def test_one_orders_work_runs_in_admission_order() -> None:
    admission = Admission(max_in_flight_bytes=1_000_000)
    channel = FakeChannel()
    first, second = await _admitted(admission, channel, 1), await _admitted(admission, channel, 2)
    may_finish = asyncio.Event()
    ran: list[str] = []

    async def slow() -> None:
        await may_finish.wait()
        ran.append("first")

    async def quick() -> None:
        ran.append("second")

    later = asyncio.create_task(admission.in_turn(second, {"id": 7}, quick))
    earlier = asyncio.create_task(admission.in_turn(first, {"id": 7}, slow))
    await _settle()
    assert ran == []  # the second waits for the first, which waits for its event
    may_finish.set()
    await asyncio.wait_for(asyncio.gather(earlier, later), 5)

    assert ran == ["first", "second"]
    admission.release(first)
    admission.release(second)


async def test_draining_waits_for_the_admitted_and_admits_no_more() -> None:
    admission = Admission(max_in_flight_bytes=1_000_000)
    channel = FakeChannel()
    turn = await _admitted(admission, channel, 1)
    waiting = asyncio.create_task(admission.admit_ordered(channel, 3))  # 2 never came

    drain = asyncio.create_task(admission.drain_ordered(grace=60))
    await _settle()
    assert await asyncio.wait_for(waiting, 5) is None  # left unacked for the next consumer
    assert not drain.done()  # delivery 1 is still in flight
    admission.release(turn)
    await asyncio.wait_for(drain, 5)

    assert await admission.admit_ordered(channel, 2) is None


async def test_draining_gives_up_on_the_admitted_after_the_grace() -> None:
    admission = Admission(max_in_flight_bytes=1_000_000)
    await _admitted(admission, FakeChannel(), 1)  # never released

    await asyncio.wait_for(admission.drain_ordered(grace=0.05), 5)


async def test_a_delivery_whose_channel_closed_is_not_admitted() -> None:
    admission = Admission(max_in_flight_bytes=1_000_000)
    channel = FakeChannel()
    channel.is_closed = True

    assert await admission.admit_ordered(channel, 1) is None


async def test_handing_one_channel_over_waits_for_its_admitted_and_admits_no_more() -> None:
    admission = Admission(max_in_flight_bytes=1_000_000)
    handed, other = FakeChannel(), FakeChannel()
    running = await _admitted(admission, handed, 1)
    elsewhere = await _admitted(admission, other, 1)

    drain = asyncio.create_task(admission.drain_channel(handed, grace=5))
    await _settle()
    assert not drain.done()  # its admitted delivery still runs
    assert await admission.admit_ordered(handed, 2) is None  # nothing more from it
    assert await _admitted(admission, other, 2) is not None  # other channels go on

    admission.release(running)
    await asyncio.wait_for(drain, 5)
    admission.release(elsewhere)


async def test_handing_a_channel_over_gives_up_waiting_after_the_grace() -> None:
    admission = Admission(max_in_flight_bytes=1_000_000)
    channel = FakeChannel()
    await _admitted(admission, channel, 1)

    await asyncio.wait_for(admission.drain_channel(channel, grace=0.1), 5)

    assert await admission.admit_ordered(channel, 2) is None
