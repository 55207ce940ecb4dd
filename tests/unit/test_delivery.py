"""The publishing side of delivery: what an AMQP short string can carry."""

from __future__ import annotations

import pytest

from service.adapters.publishing import SHORT_STRING_BYTES, short_string


@pytest.mark.parametrize("value", [None, "", "corr-1", "x" * SHORT_STRING_BYTES])
def test_what_fits_is_kept_as_it_is(value: str | None) -> None:
    assert short_string(value) == value


@pytest.mark.parametrize("value", ["x" * 256, "é" * 200, "€" * 100, "a" + "😀" * 80])
def test_what_does_not_fit_is_cut_to_whole_characters_within_255_bytes(value: str) -> None:
    cut = short_string(value)
    assert cut is not None
    assert len(value.encode()) > SHORT_STRING_BYTES
    assert SHORT_STRING_BYTES - 3 <= len(cut.encode()) <= SHORT_STRING_BYTES
    assert value.startswith(cut)
