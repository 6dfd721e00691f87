"""1 MB hostile inputs are decoded or refused quickly (issue 12, "what held": kept so)."""

from __future__ import annotations

import base64
import json
import time

import pytest

from choria_broker_adapters.codec.protocol import DecodeError, decode
from tests.reliability_support import small_registration

MB = 1024 * 1024
# Generous for a busy two-core machine; the point is "not seconds, not a hang".
WITHIN_S = 1.0
TRANSPORT = b'{"protocol":"choria:transport:1",'


def pad_key(fill: bytes) -> bytes:
    return TRANSPORT + b'"x":' + fill + b',"data":"aGk="}'


HOSTILE = {
    "deep-array": b"[" * (MB // 2) + b"]" * (MB // 2),
    "unterminated-deep": TRANSPORT + b'"x":' + b"[" * MB,
    "escapes": pad_key(b'"' + b"\\u0000" * (MB // 6) + b'"'),
    "surrogates": pad_key(b'"' + b"\\ud800" * (MB // 6) + b'"'),
    "many-keys": pad_key(b"{" + b",".join(b'"k%d":1' % i for i in range(100_000)) + b"}"),
    "huge-number": pad_key(b"1" + b"0" * MB),
    "garbage-data": TRANSPORT + b'"data":"' + base64.b64encode(bytes(range(256)) * (MB // 512)) + b'"}',
    "nul-bytes": b"\x00" * MB,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_megabyte_of_hostile_input_is_refused_quickly(name: str) -> None:
    payload = HOSTILE[name]
    assert len(payload) >= MB // 2
    started = time.perf_counter()
    with pytest.raises(DecodeError) as caught:
        decode(payload, protocol="request", security_provider="puppet")
    elapsed = time.perf_counter() - started
    assert "internal" not in caught.value.reason
    assert elapsed < WITHIN_S, f"{name}: {elapsed:.3f}s"


def test_a_valid_registration_near_a_megabyte_is_decoded_quickly() -> None:
    body = json.dumps({"blob": "x" * (MB // 2)})
    message = small_registration("big.example.net", "0" * 32, body=body)
    assert len(message.payload) > MB // 2
    started = time.perf_counter()
    envelope = decode(message.payload, protocol="request", security_provider="puppet")
    elapsed = time.perf_counter() - started
    assert envelope.sender == "big.example.net"
    assert elapsed < WITHIN_S, f"{elapsed:.3f}s"
