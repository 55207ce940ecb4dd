"""API keys of the HTTP gateway (service/gateway/auth.py) and `make api-key`
(devtools/api_key.py): what is stored, what is accepted; and the CORS origins setting."""

from __future__ import annotations

import hashlib
import shlex

import pytest

from devtools import api_key
from service.config import Settings
from service.gateway.auth import ApiKeys, key_digest, new_key


def test_the_digest_is_the_plain_sha256_of_the_key() -> None:
    assert key_digest("abc") == hashlib.sha256(b"abc").hexdigest()
    assert key_digest("clé") == hashlib.sha256("clé".encode()).hexdigest()


def test_new_keys_are_long_and_distinct() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(key) >= 43 for key in keys)


def test_only_the_keys_whose_digests_are_stored_are_accepted() -> None:
    first, second = new_key(), new_key()
    keys = ApiKeys([key_digest(first), key_digest(second)])
    assert keys
    assert keys.accept(first)
    assert keys.accept(second)
    for other in (new_key(), first + " ", first.upper(), key_digest(first), ""):
        assert not keys.accept(other), other


def test_no_stored_digest_accepts_nothing() -> None:
    keys = ApiKeys([])
    assert not keys
    assert not keys.accept(new_key())
    assert not keys.accept("")


def test_make_api_key_prints_a_key_and_the_setting_that_accepts_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    api_key.main([])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("export")]
    exported = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in lines)
    key = exported["ORDERS_API_KEY"]
    assert key not in exported["ORDERS_API_KEY_HASHES"]  # only the digest is the setting
    monkeypatch.setenv("ORDERS_API_KEY_HASHES", exported["ORDERS_API_KEY_HASHES"])
    assert ApiKeys(Settings().api_key_hashes).accept(key)


def test_make_api_key_with_keys_prints_only_their_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    api_key.main(["first-key", "second-key"])
    out = capsys.readouterr().out
    assert "first-key" not in out
    line = next(line for line in out.splitlines() if line.startswith("export"))
    name, value = shlex.split(line.removeprefix("export "))[0].split("=", 1)
    monkeypatch.setenv(name, value)
    accepted = ApiKeys(Settings().api_key_hashes)
    assert accepted.accept("first-key")
    assert accepted.accept("second-key")
    assert not accepted.accept("third-key")


def test_the_setting_holds_digests_not_keys() -> None:
    """A key pasted where its digest belongs is refused at start-up, not silently unusable."""
    with pytest.raises(ValueError, match="SHA-256"):
        Settings(api_key_hashes=frozenset({new_key()}))
    assert Settings(api_key_hashes=frozenset({"AB" * 32})).api_key_hashes == {"ab" * 32}


@pytest.mark.parametrize("origin", ["*", "https://shop.example.com/", "shop.example.com"])
def test_cors_origins_are_plain_origins(origin: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        Settings(api_cors_origins=(origin,))


def test_cors_origins_with_ports_and_ip_literals_are_accepted() -> None:
    origins = ("https://shop.example.com", "http://127.0.0.1:5173", "http://[::1]:8080")
    assert Settings(api_cors_origins=origins).api_cors_origins == origins
