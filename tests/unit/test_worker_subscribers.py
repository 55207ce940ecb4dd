"""The subscribers' message parameter (service/worker/orders.py) is resolved in place:
fast_depends runs a synchronous custom field in a worker thread for every message."""

from __future__ import annotations

import typing

from fast_depends.utils import is_coroutine_callable

from service.worker.orders import CurrentMessage, RabbitMessage


def test_the_message_parameter_is_resolved_without_a_thread() -> None:
    field = CurrentMessage("message")
    assert is_coroutine_callable(field.use)
    assert any(isinstance(extra, CurrentMessage) for extra in typing.get_args(RabbitMessage))


async def test_it_resolves_the_message_from_the_context() -> None:
    field = CurrentMessage("message")
    field.param_name = "message"

    class Context:
        def resolve_local(self, name: str) -> object:
            return "the delivery" if name == "message" else None

        def get_local(self, name: str, default: object = None) -> object:
            return self.resolve_local(name)

        def resolve(self, name: str) -> object:
            return self.resolve_local(name)

    resolved = await field.use(context__=Context())
    assert resolved["message"] == "the delivery"
