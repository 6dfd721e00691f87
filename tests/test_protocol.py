"""Decoding (choria_broker_adapters.codec.protocol): the reference vectors and examples, table tests
of the Go JSON rules, and hypothesis mutations of valid messages at every layer.

Every test runs on both JSON backends (orjson fast path with precise fallback, and the
standard library alone) through the `json_backend` fixture; the fuzz tests also check that
both backends reach the same outcome for the same bytes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from choria_broker_adapters.codec import jsonfast
from choria_broker_adapters.codec.output import OutputError, encode_output
from choria_broker_adapters.codec.protocol import DecodeError, Envelope, decode

DATA = Path(__file__).parent / "data" / "protocol"
VECTORS = json.loads((DATA / "vectors.json").read_text())["vectors"]
EXAMPLES = sorted(path for path in (DATA / "examples").iterdir() if (path / "layers.json").exists())
ORJSON = jsonfast.orjson


@pytest.fixture(params=["orjson", "stdlib"])
def json_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "orjson":
        if ORJSON is None:
            pytest.skip("orjson not installed")
        monkeypatch.setattr(jsonfast, "orjson", ORJSON)
    else:
        monkeypatch.setattr(jsonfast, "orjson", None)
    yield request.param


def provider_for(security: str) -> str:
    return "choria" if security == "ed25519+jwt" else "puppet"


def outcome(payload: bytes, protocol: str = "request", provider: str = "puppet") -> Envelope | str:
    """The envelope, or "discard: <reason>"."""
    try:
        return decode(payload, protocol=protocol, security_provider=provider)
    except DecodeError as error:
        return f"discard: {error.reason}"


# --- builders for valid messages (Go's key order, compact JSON) -------------------------------


# A value that serialises as the literal 1e400 (a float64 overflow; Python has no such float).
FLOAT_OVERFLOW = "@@1e400@@"


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")).replace(f'"{FLOAT_OVERFLOW}"', "1e400")


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


EMPTY_FILTER = {"fact": [], "cf_class": [], "agent": [], "identity": [], "compound": []}
V1_HEADERS = {"reply-to": "dev.null", "mc_sender": "n1.example.net", "seen-by": [["a", "b", "c"]]}
V2_HEADERS = {"reply": "dev.null", "sender": "n1.example.net", "trace": [["a", "b", "c"]]}
REQUEST_ID = "0123456789abcdef0123456789abcdef"


def v1_request_layers() -> list[dict[str, Any]]:
    return [
        {"protocol": "choria:transport:1", "headers": dict(V1_HEADERS)},
        {"protocol": "choria:secure:request:1", "signature": "aW5zZWN1cmU=", "pubcert": "insecure"},
        {
            "protocol": "choria:request:1",
            "message": '{"hello":"world"}',
            "envelope": {
                "requestid": REQUEST_ID,
                "senderid": "n1.example.net",
                "callerid": "choria=n1.example.net",
                "collective": "mcollective",
                "agent": "registration",
                "ttl": 60,
                "time": 1700000000,
                "filter": dict(EMPTY_FILTER),
            },
        },
    ]


def v1_reply_layers() -> list[dict[str, Any]]:
    return [
        {"protocol": "choria:transport:1", "headers": dict(V1_HEADERS)},
        {"protocol": "choria:secure:reply:1", "hash": "bm90IGNoZWNrZWQ="},
        {
            "protocol": "choria:reply:1",
            "message": '{"hello":"world"}',
            "envelope": {
                "requestid": REQUEST_ID,
                "senderid": "n1.example.net",
                "agent": "rpcutil",
                "time": 1700000001,
            },
        },
    ]


def v2_request_layers() -> list[dict[str, Any]]:
    return [
        {"protocol": "io.choria.protocol.v2.transport", "headers": dict(V2_HEADERS)},
        {
            "protocol": "io.choria.protocol.v2.secure_request",
            "signature": b64("insecure"),
            "caller": "e30.e30.c2ln",
        },
        {
            "protocol": "io.choria.protocol.v2.request",
            "message": b64('{"hello":"world"}'),
            "id": "2Y7wZ9qN0lXn3m0uK3vB1m6c4Qe",
            "sender": "n1.example.net",
            "caller": "n1.example.net",
            "collective": "choria",
            "agent": "registration",
            "ttl": 60,
            "time": 1700000000123456789,
            "filter": dict(EMPTY_FILTER),
        },
    ]


def v2_reply_layers() -> list[dict[str, Any]]:
    return [
        {"protocol": "io.choria.protocol.v2.transport", "headers": dict(V2_HEADERS)},
        {
            "protocol": "io.choria.protocol.v2.secure_reply",
            "hash": "bm90IGNoZWNrZWQ=",
            "signature": b64("sig"),
        },
        {
            "protocol": "io.choria.protocol.v2.reply",
            "message": b64('{"hello":"world"}'),
            "request": "2Y7wZ9qN0lXn3m0uK3vB1m6c4Qe",
            "sender": "n1.example.net",
            "agent": "rpcutil",
            "time": 1700000001000000000,
        },
    ]


# (version, mode) -> (layers factory, the secure key holding the inner layer)
KINDS = {
    (1, "request"): (v1_request_layers, "message"),
    (1, "reply"): (v1_reply_layers, "message"),
    (2, "request"): (v2_request_layers, "request"),
    (2, "reply"): (v2_reply_layers, "reply"),
}


def build(
    version: int,
    layers: list[Any],
    inner_bytes: bytes | None = None,
    secure_bytes: bytes | None = None,
    inner_key: str = "message",
) -> bytes:
    """Serialise [transport, secure, inner] the way Go nests them. `inner_bytes` /
    `secure_bytes` replace the serialised layer (to inject broken JSON)."""
    transport, secure, inner = layers
    inner_raw = dumps(inner).encode() if inner_bytes is None else inner_bytes
    if isinstance(secure, dict):
        secure = dict(secure)
        if version == 1:
            secure[inner_key] = inner_raw.decode("utf-8", "replace")
        else:
            secure[inner_key] = b64(inner_raw)
    secure_raw = dumps(secure).encode() if secure_bytes is None else secure_bytes
    transport = dict(transport)
    transport.setdefault("data", b64(secure_raw))  # a mutation may have replaced it
    # Go writes protocol, data, headers in that order.
    ordered = {key: transport[key] for key in ("protocol", "data") if key in transport}
    ordered.update(transport)
    return dumps(ordered).encode()


def build_kind(version: int, mode: str, mutate: Any = None) -> bytes:
    factory, inner_key = KINDS[(version, mode)]
    layers = factory()
    if mutate:
        mutate(layers)
    return build(version, layers, inner_key=inner_key)


# --- reference data ---------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["name"] for vector in VECTORS])
def test_vector(vector: dict[str, Any], json_backend: str) -> None:
    payload = vector["input"].encode("utf-8")
    expect = vector["expect"]
    protocol = vector["ingest_protocol"]
    provider = provider_for(vector["security"])
    if expect["result"] in ("discard", "go_panics"):
        with pytest.raises(DecodeError) as caught:
            decode(payload, protocol=protocol, security_provider=provider)
        assert caught.value.reason
        return
    envelope = decode(payload, protocol=protocol, security_provider=provider)
    if expect["result"] == "discard_at_output":
        with pytest.raises(OutputError) as failed:
            encode_output(envelope, adapter_type="choria_streams")
        assert "9999" in failed.value.reason
        return
    assert expect["result"] == "publish"
    assert encode_output(envelope, adapter_type="choria_streams") == expect["output"].encode("utf-8")


def test_vectors_cover_every_result_kind() -> None:
    kinds = {vector["expect"]["result"] for vector in VECTORS}
    assert kinds == {"publish", "discard", "discard_at_output", "go_panics"}
    assert len(VECTORS) == 33


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example(example: Path, json_backend: str) -> None:
    layers = json.loads((example / "layers.json").read_text())
    envelope = decode(
        (example / "wire.transport.json").read_bytes(),
        protocol=layers["adapter_ingest_protocol"],
        security_provider=provider_for(layers["broker_security_technology"]),
    )
    expected = (example / "expected_output.json").read_bytes()
    assert encode_output(envelope, adapter_type="choria_streams") == expected
    assert envelope.sender == "node1.example.net"


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_refused_by_the_other_technology(example: Path) -> None:
    layers = json.loads((example / "layers.json").read_text())
    other = "puppet" if layers["broker_security_technology"] == "ed25519+jwt" else "choria"
    with pytest.raises(DecodeError, match="requires"):
        decode(
            (example / "wire.transport.json").read_bytes(),
            protocol=layers["adapter_ingest_protocol"],
            security_provider=other,
        )


# --- the builders are right, and each kind decodes ------------------------------------------


@pytest.mark.parametrize(("version", "mode"), list(KINDS))
def test_built_messages_decode(version: int, mode: str, json_backend: str) -> None:
    provider = "choria" if version == 2 else "puppet"
    envelope = decode(build_kind(version, mode), protocol=mode, security_provider=provider)
    assert envelope.message == b'{"hello":"world"}'
    assert envelope.sender == "n1.example.net"


# --- mode and gate ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        ("request", "publish"),
        ("reply", "discard"),
        ("Request", "discard"),  # case-sensitive: anything but "request" is reply mode
        ("", "discard"),
        ("requests", "discard"),
    ],
)
def test_mode_selection(protocol: str, expected: str, json_backend: str) -> None:
    result = outcome(build_kind(1, "request"), protocol=protocol)
    assert isinstance(result, Envelope) == (expected == "publish"), result


@pytest.mark.parametrize(
    ("provider", "version", "accepted"),
    [
        ("puppet", 1, True),
        ("file", 1, True),
        ("certmanager", 1, True),
        ("pkcs11", 1, True),
        ("choria", 1, False),
        ("puppet", 2, False),
        ("file", 2, False),
        ("choria", 2, True),
    ],
)
def test_security_technology_gate(provider: str, version: int, accepted: bool, json_backend: str) -> None:
    result = outcome(build_kind(version, "request"), provider=provider)
    assert isinstance(result, Envelope) == accepted, result


# --- transport layer --------------------------------------------------------------------------

V1_OK = build_kind(1, "request")


def v1_with(transport_changes: dict[str, Any]) -> bytes:
    document = json.loads(V1_OK)
    for key, value in transport_changes.items():
        if value is KeyError:
            document.pop(key, None)
        else:
            document[key] = value
    return dumps(document).encode()


@pytest.mark.parametrize(
    ("payload", "published"),
    [
        (b"", False),
        (b"null", False),
        (b"[]", False),
        (b'"choria:transport:1"', False),
        (b"\xef\xbb\xbf" + V1_OK, False),  # UTF-8 BOM
        (V1_OK + b" x", False),  # trailing data
        (b" \t\r\n" + V1_OK + b" \t\r\n", True),  # JSON whitespace around the value
        (b"\x0c" + V1_OK, False),  # form feed is not JSON whitespace
        (v1_with({"protocol": KeyError}), False),
        (v1_with({"protocol": 1}), False),
        (v1_with({"protocol": None}), False),
        (v1_with({"protocol": "CHORIA:TRANSPORT:1"}), False),  # the value is exact
        (v1_with({"headers": KeyError}), True),  # missing headers are fine
        (v1_with({"headers": None}), False),  # Go crashes
        (v1_with({"headers": []}), False),
        (v1_with({"headers": {"reply-to": 5}}), False),
        (v1_with({"headers": {"seen-by": [["a"]]}}), True),  # missing tuple items are ""
        (v1_with({"headers": {"seen-by": [["a", "b", "c", 4]]}}), True),  # extras skipped
        (v1_with({"headers": {"seen-by": [["a", 2]]}}), False),
        (v1_with({"headers": {"seen-by": None, "federation": None}}), True),
        (v1_with({"headers": {"federation": {"req": "x", "reply-to": "y", "target": ["a"]}}}), True),
        (v1_with({"headers": {"federation": {"target": "a"}}}), False),
        (v1_with({"headers": {"unknown": {"deep": [1, 2.5, None]}}}), True),
        (v1_with({"data": None}), False),  # empty data is empty JSON
        (v1_with({"data": 5}), False),
        (v1_with({"data": "!!!!"}), False),
        (v1_with({"extra": FLOAT_OVERFLOW}), True),  # unchecked layer: overflowing float in an unknown key
        (v1_with({"extra": "\ud800"}), True),  # lone surrogate escape in an unknown key
    ],
)
def test_transport_rules(payload: bytes, published: bool, json_backend: str) -> None:
    result = outcome(payload)
    assert isinstance(result, Envelope) == published, result


def test_transport_keys_are_matched_case_insensitively_last_wins(json_backend: str) -> None:
    document = json.loads(V1_OK)
    data = document.pop("data")
    # An earlier exact "data" loses to the later case variant, as in Go.
    text = f'{{"protocol":"choria:transport:1","data":"!!!!","DATA":"{data}","Headers":{{}}}}'
    assert isinstance(outcome(text.encode()), Envelope)
    text = f'{{"protocol":"choria:transport:1","DATA":"{data}","data":"!!!!","Headers":{{}}}}'
    assert outcome(text.encode()) == "discard: transport: data is not base64"
    # U+017F (long s) and U+212A (Kelvin sign) fold to s and k in Go.
    text = f'{{"protocol":"choria:transport:1","data":"{data}","\u017fender":1}}'
    assert isinstance(outcome(text.encode()), Envelope)
    text = f'{{"protocol":"choria:transport:1","data":"{data}","headers":{{"mc_\u017fender":5}}}}'
    assert "mc_sender" in str(outcome(text.encode()))


@pytest.mark.parametrize(
    ("data_text", "published"),
    [
        ("{b64}", True),
        ("{b64_crlf}", True),  # CR/LF inside base64 are skipped
        ("{b64_nopad}", False),
        ("{b64}=", False),  # excess padding
        ("{b64_urlsafe}", False),
        (" {b64}", False),
    ],
)
def test_base64_rules(data_text: str, published: bool, json_backend: str) -> None:
    secure = base64.b64decode(json.loads(V1_OK)["data"])
    # Make the secure layer's length not a multiple of 3 so that padding is present.
    while len(secure) % 3 == 0:
        secure += b" "
    encoded = base64.b64encode(secure).decode()
    forms = {
        "b64": encoded,
        "b64_crlf": "\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)),
        "b64_nopad": encoded.rstrip("="),
        "b64_urlsafe": encoded.replace("+", "-").replace("/", "_") + ("-" if "+" not in encoded else ""),
    }
    text = data_text.format(**forms)
    payload = dumps({"protocol": "choria:transport:1", "data": text, "headers": {}}).encode()
    assert isinstance(outcome(payload), Envelope) == published


# --- request layers (schema and field types) --------------------------------------------------


def v1_envelope(**changes: Any) -> bytes:
    def mutate(layers: list[dict[str, Any]]) -> None:
        for key, value in changes.items():
            if value is KeyError:
                del layers[2]["envelope"][key]
            else:
                layers[2]["envelope"][key] = value

    return build_kind(1, "request", mutate)


def v2_request(**changes: Any) -> bytes:
    def mutate(layers: list[dict[str, Any]]) -> None:
        for key, value in changes.items():
            if value is KeyError:
                del layers[2][key]
            else:
                layers[2][key] = value

    return build_kind(2, "request", mutate)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (v1_envelope(ttl=30), "publish"),
        (v1_envelope(ttl=29), "ttl"),
        (v1_envelope(ttl=60.0), "ttl"),  # schema may count it an integer, Go's field decode does not
        (v1_envelope(ttl="60"), "ttl"),
        (v1_envelope(ttl=True), "ttl"),
        (v1_envelope(time=-1), "publish"),  # v1 time has no bounds
        (v1_envelope(time=2**63 - 1), "publish"),  # decodes; refused later at output
        (v1_envelope(time=2**63), "time"),
        (v1_envelope(time=1.5), "time"),
        (v1_envelope(time=None), "time"),  # schema: null is not an integer
        (v1_envelope(requestid="a" * 31), "requestid"),
        (v1_envelope(requestid="\u00e9" * 32), "publish"),  # length counts characters
        (v1_envelope(senderid=""), "publish"),  # senderid may be empty
        (v1_envelope(senderid=None), "senderid"),
        (v1_envelope(callerid=""), "callerid"),
        (v1_envelope(agent=KeyError), "agent"),
        (v1_envelope(filter=KeyError), "filter"),
        (v1_envelope(filter=None), "filter"),
        (v1_envelope(filter={"fact": [], "cf_class": [], "identity": []}), "compound"),
        (v1_envelope(filter={"fact": [], "cf_class": [], "identity": [], "compound": []}), "publish"),
        (v1_envelope(filter={**EMPTY_FILTER, "identity": ["a", 1]}), "identity"),
        (v1_envelope(filter={**EMPTY_FILTER, "compound": [[{"a": "b"}]]}), "publish"),
        (v1_envelope(filter={**EMPTY_FILTER, "compound": [[{"a": 1}]]}), "compound"),  # Go: map of strings
        (v1_envelope(filter={**EMPTY_FILTER, "compound": [["x"]]}), "compound"),
        (
            v1_envelope(filter={**EMPTY_FILTER, "fact": [{"fact": "a", "operator": "==", "value": "b"}]}),
            "publish",
        ),
        (
            v1_envelope(filter={**EMPTY_FILTER, "fact": [{"fact": "a", "operator": "~", "value": "b"}]}),
            "operator",
        ),
        (
            v1_envelope(filter={**EMPTY_FILTER, "fact": [{"fact": "", "operator": "==", "value": "b"}]}),
            "fact",
        ),
        (v1_envelope(filter={**EMPTY_FILTER, "fact": [{"fact": "a", "operator": "=="}]}), "value"),
        (v1_envelope(extra=FLOAT_OVERFLOW), "JSON"),  # schema-checked document: float overflow anywhere
        (v1_envelope(extra=10**400), "JSON"),
        (v1_envelope(extra=10**30), "publish"),
        (v2_request(filter=KeyError), "publish"),  # optional in v2
        (v2_request(filter=None), "filter"),
        (v2_request(time=1), "publish"),
        (v2_request(time=0), "time"),
        (v2_request(time=-5), "time"),
        (v2_request(time=2**63), "time"),  # passes the schema maximum, not int64
        (v2_request(ttl=0), "ttl"),
        (v2_request(id=""), "id"),
        (v2_request(message=""), "message"),
        (v2_request(message="aGk"), "message"),  # unpadded
        (v2_request(sender=KeyError), "sender"),
        (v2_request(signer="x"), "publish"),
    ],
)
def test_request_layer_rules(payload: bytes, expected: str, json_backend: str) -> None:
    provider = "choria" if b"io.choria.protocol.v2" in payload else "puppet"
    result = outcome(payload, provider=provider)
    if expected == "publish":
        assert isinstance(result, Envelope), result
    else:
        assert isinstance(result, str)
        assert expected in result, result


@pytest.mark.parametrize(
    ("secure_changes", "expected"),
    [
        ({"signature": KeyError, "pubcert": KeyError}, "missing properties: 'signature', 'pubcert'"),
        ({"signature": ""}, "signature"),
        ({"pubcert": 5}, "pubcert"),
        ({"protocol": "choria:secure:request:2"}, "protocol"),
        ({"SIGNATURE": 5}, "signature"),  # not seen by the schema, refused by Go's field decode
        # Edge case 22: a later case variant re-labels a v1 secure request as v2 (Go panics).
        ({"PROTOCOL": "io.choria.protocol.v2.secure_request"}, "re-labelled"),
        ({"PROTOCOL": "choria:secure:reply:1"}, "choria:secure:reply:1"),
        ({"PROTOCOL": "bogus"}, "io.choria.protocol.unknown"),
    ],
)
def test_v1_secure_request_rules(secure_changes: dict[str, Any], expected: str, json_backend: str) -> None:
    def mutate(layers: list[dict[str, Any]]) -> None:
        for key, value in secure_changes.items():
            if value is KeyError:
                del layers[1][key]
            else:
                layers[1][key] = value

    result = outcome(build_kind(1, "request", mutate))
    assert isinstance(result, str)
    assert expected in result, result


def test_v2_secure_request_relabelled_as_v1_is_parsed_as_v1_request(json_backend: str) -> None:
    v1_request = v1_request_layers()[2]
    layers = v2_request_layers()
    layers[1]["PROTOCOL"] = "choria:secure:request:1"
    payload = build(2, [layers[0], layers[1], v1_request], inner_key="request")
    envelope = decode(payload, security_provider="choria")
    assert envelope.time == 1700000000 * 10**9  # seconds: read as a v1 request


@pytest.mark.parametrize(
    ("secure_changes", "expected"),
    [
        ({"signature": "!!"}, "signature is not base64"),
        ({"signature": ""}, "signature"),
        ({"caller": KeyError}, "caller"),
        ({"signer": 5}, "signer"),
        ({"request": "e30"}, "request is not base64"),
    ],
)
def test_v2_secure_request_rules(secure_changes: dict[str, Any], expected: str, json_backend: str) -> None:
    def mutate(layers: list[dict[str, Any]]) -> None:
        for key, value in secure_changes.items():
            if value is KeyError:
                del layers[1][key]
            else:
                layers[1][key] = value

    factory, _ = KINDS[(2, "request")]
    layers = factory()
    mutate(layers)
    secure = dict(layers[1])
    if "request" not in secure_changes:
        secure["request"] = b64(dumps(layers[2]))
    payload = build(2, [layers[0], secure, layers[2]], secure_bytes=dumps(secure).encode())
    result = outcome(payload, provider="choria")
    assert isinstance(result, str)
    assert expected in result, result


# --- reply layers -----------------------------------------------------------------------------


def v1_reply(secure: dict[str, Any] | None = None, reply_text: str | None = None) -> bytes:
    layers = v1_reply_layers()
    if secure is not None:
        layers[1] = secure
    inner = None if reply_text is None else reply_text.encode()
    return build(1, layers, inner_bytes=inner)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (v1_reply(), "publish"),
        (v1_reply(secure={"hash": "x"}), "publish"),  # protocol absent: assumed v1 secure reply
        (v1_reply(secure={"protocol": None}), "io.choria.protocol.unknown"),
        (v1_reply(secure={"protocol": "choria:secure:request:1"}), "choria:secure:request:1"),
        (v1_reply(reply_text=""), "empty"),
        (v1_reply(reply_text="null"), "publish"),  # Go leaves the reply untouched: empty values
        (v1_reply(reply_text="[]"), "not a JSON object"),
        (v1_reply(reply_text='{"message":"m"}'), "publish"),  # no envelope: empty, 1970
        (v1_reply(reply_text='{"message":"m","envelope":null}'), "envelope is null"),
        (v1_reply(reply_text='{"message":"m","Envelope":{"SenderID":"x","time":1.0}}'), "time"),
        (v1_reply(reply_text='{"message":"m","envelope":{"time":1e400}}'), "time"),
        (v1_reply(reply_text='{"message":"m","envelope":{"other":1e400}}'), "publish"),  # not schema-checked
        (build(1, [{"protocol": "choria:transport:1"}, b"", {}], secure_bytes=b""), "empty"),
        (build(1, [{"protocol": "choria:transport:1"}, b"", {}], secure_bytes=b"null"), "empty"),
        (build(1, [{"protocol": "choria:transport:1"}, b"", {}], secure_bytes=b"5"), "not a JSON object"),
    ],
)
def test_v1_reply_rules(payload: bytes, expected: str, json_backend: str) -> None:
    result = outcome(payload, protocol="reply")
    if expected == "publish":
        assert isinstance(result, Envelope), result
    else:
        assert isinstance(result, str)
        assert expected in result, result


def test_v1_reply_without_envelope_is_published_with_empty_values(json_backend: str) -> None:
    envelope = decode(v1_reply(reply_text='{"message":"m"}'), protocol="reply")
    assert envelope == Envelope(b"m", "", 0, "")
    assert b'"time":"1970-01-01T00:00:00Z"' in encode_output(envelope, adapter_type="jetstream")


def test_cross_version_reply_follows_the_secure_reply_protocol(json_backend: str) -> None:
    # A v1 transport whose secure reply says v2: the message text is parsed as a v2 reply.
    v2_reply = v2_reply_layers()[2]
    secure = {"protocol": "io.choria.protocol.v2.secure_reply", "hash": "x"}
    payload = build(1, [{"protocol": "choria:transport:1"}, secure, v2_reply])
    envelope = decode(payload, protocol="reply")
    assert envelope.time == 1700000001000000000
    assert envelope.request_id == "2Y7wZ9qN0lXn3m0uK3vB1m6c4Qe"


def test_v2_reply_signature_must_be_base64_when_present(json_backend: str) -> None:
    layers = v2_reply_layers()
    layers[1]["signature"] = "not base64!"
    payload = build(2, layers, inner_key="reply")
    assert "signature is not base64" in str(outcome(payload, protocol="reply", provider="choria"))
    layers[1]["signature"] = None
    payload = build(2, layers, inner_key="reply")
    assert isinstance(outcome(payload, protocol="reply", provider="choria"), Envelope)


# --- Go JSON string semantics -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_message", "expected_message"),
    [
        (b'"ok"', b"ok"),
        (b'"caf\xc3\xa9"', "café".encode()),
        (b'"a\xffb"', "a\ufffdb".encode()),  # invalid byte -> U+FFFD
        (b'"\xe2\x82"', "\ufffd\ufffd".encode()),  # truncated sequence: one per byte (Go)
        (b'"\xed\xa0\x80"', "\ufffd\ufffd\ufffd".encode()),  # encoded surrogate: one per byte
        (b'"\\ud800x"', "\ufffdx".encode()),  # lone surrogate escape
        (b'"\\ud83d\\ude00"', "\U0001f600".encode()),  # a valid pair combines
        (b'"\\u0000"', b"\x00"),
    ],
)
def test_v1_message_strings_follow_go(raw_message: bytes, expected_message: bytes, json_backend: str) -> None:
    # Build the v1 request text by hand so the raw bytes reach the inner JSON parser.
    request = v1_request_layers()[2]
    request_text = dumps(request).replace('"{\\"hello\\":\\"world\\"}"', "@MSG@").encode()
    request_text = request_text.replace(b"@MSG@", raw_message)
    secure = dumps(
        {"protocol": "choria:secure:request:1", "message": "@REQ@", "signature": "x", "pubcert": "x"}
    )
    secure_bytes = secure.encode().replace(b'"@REQ@"', json_string_bytes(request_text))
    payload = build(1, [{"protocol": "choria:transport:1"}, {}, {}], secure_bytes=secure_bytes)
    envelope = decode(payload)
    assert envelope.message == expected_message


def json_string_bytes(raw: bytes) -> bytes:
    """A JSON string literal holding `raw` byte for byte (invalid UTF-8 kept raw)."""
    out = bytearray(b'"')
    for byte in raw:
        if byte == 0x22:
            out += b'\\"'
        elif byte == 0x5C:
            out += b"\\\\"
        elif byte < 0x20:
            out += b"\\u%04x" % byte
        else:
            out.append(byte)
    out += b'"'
    return bytes(out)


def test_invalid_utf8_in_v2_payload_is_kept_as_bytes(json_backend: str) -> None:
    layers = v2_request_layers()
    layers[2]["message"] = b64(b"a\xffb")
    envelope = decode(build(2, layers, inner_key="request"), security_provider="choria")
    assert envelope.message == b"a\xffb"
    assert b'"data":"a\\ufffdb"' in encode_output(envelope, adapter_type="choria_streams")


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"protocol":"choria:transport:1","x":' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"protocol":"choria:transport:1","x":' + b"[" * 100_000,
        b'{"protocol":"choria:transport:1","x":1' + b"0" * 5000 + b"}",
        b'{"protocol":"choria:transport:1","x":NaN}',
        b'{"protocol":"choria:transport:1","x":Infinity}',
        b'{"protocol":"choria:transport:1","data":"\xff\xfe"}',
        b"\xff\xfe{}",
        b"\x00" * 64,
    ],
    ids=[
        "deep-array",
        "deep-in-unknown-key",
        "unterminated-deep",
        "huge-int",
        "nan",
        "infinity",
        "invalid-utf8-data",
        "utf16-bom",
        "nul-bytes",
    ],
)
def test_hostile_inputs_only_raise_decode_error(payload: bytes, json_backend: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(payload)
    assert "internal" not in caught.value.reason


def test_decode_accepts_bytes_like_payloads() -> None:
    assert decode(memoryview(V1_OK)) == decode(bytearray(V1_OK)) == decode(V1_OK)


# --- hypothesis: mutate valid messages at every layer ------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(
        ["", "!!!!", "aGk", "aGk=", "insecure", "choria:secure:request:1", "\ud800", 10**400, FLOAT_OVERFLOW]
    ),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def all_outcomes(payload: bytes, protocol: str, provider: str) -> tuple[Any, Any]:
    """(orjson outcome, stdlib outcome), each an output document, a discard, or an output refusal;
    asserts nothing but DecodeError/OutputError escapes."""
    results = []
    for backend in ("orjson", "stdlib"):
        saved = jsonfast.orjson
        jsonfast.orjson = ORJSON if backend == "orjson" else None
        try:
            try:
                envelope = decode(payload, protocol=protocol, security_provider=provider)
            except DecodeError as error:
                assert "internal" not in error.reason, error.reason
                results.append(("discard", error.reason))
                continue
            try:
                results.append(("publish", encode_output(envelope, adapter_type="choria_streams")))
            except OutputError as error:
                results.append(("output", error.reason))
        finally:
            jsonfast.orjson = saved
    return results[0], results[1]


def mutate_dict(draw: Any, layer: dict[str, Any]) -> None:
    """Apply one of: drop a key, retype a value, add a case variant, null it, bad base64."""
    keys = [*sorted(layer), "data"]
    key = draw(st.sampled_from(keys))
    action = draw(st.sampled_from(["drop", "retype", "variant", "null", "badb64", "nested"]))
    if action == "drop":
        layer.pop(key, None)
    elif action == "retype":
        layer[key] = draw(JSON_VALUES)
    elif action == "variant":
        variant = draw(st.sampled_from([key.upper(), key.title(), key.replace("s", "\u017f")]))
        layer[variant] = draw(JSON_VALUES)
    elif action == "null":
        layer[key] = None
    elif action == "badb64":
        layer[key] = draw(st.sampled_from(["!!!!", "aGk", "aGk==", "a\nGk=", "-_-_", " aGk="]))
    elif action == "nested" and isinstance(layer.get(key), dict):
        mutate_dict(draw, layer[key])


def rarely(draw: Any, one_in: int) -> bool:
    return draw(st.integers(min_value=1, max_value=one_in)) == 1


@st.composite
def mutated_messages(draw: Any) -> tuple[bytes, str, str]:
    version, mode = draw(st.sampled_from(list(KINDS)))
    factory, inner_key = KINDS[(version, mode)]
    layers = factory()
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        mutate_dict(draw, layers[draw(st.sampled_from([0, 1, 2, 2, 2]))])
    inner_bytes = secure_bytes = None
    if rarely(draw, 4):
        text = dumps(layers[2]).encode()
        inner_bytes = text[: draw(st.integers(min_value=0, max_value=len(text)))]
    if rarely(draw, 8):
        secure = dict(layers[1])
        secure[inner_key] = "x"
        text = dumps(secure).encode()
        secure_bytes = text[: draw(st.integers(min_value=0, max_value=len(text)))]
    payload = build(version, layers, inner_bytes=inner_bytes, secure_bytes=secure_bytes, inner_key=inner_key)
    if rarely(draw, 8):
        payload = payload[: draw(st.integers(min_value=0, max_value=len(payload)))]
    if rarely(draw, 8):
        position = draw(st.integers(min_value=0, max_value=len(payload)))
        payload = payload[:position] + draw(st.binary(min_size=1, max_size=4)) + payload[position:]
    matching_provider = "choria" if version == 2 else "puppet"
    provider = draw(st.sampled_from(["puppet", "choria"])) if rarely(draw, 8) else matching_provider
    protocol = draw(st.sampled_from(["request", "reply", "Request"])) if rarely(draw, 8) else mode
    return payload, protocol, provider


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.skipif(ORJSON is None, reason="compares the orjson and stdlib paths")
@FUZZ
@given(mutated_messages())
def test_mutated_messages_only_raise_typed_errors_and_backends_agree(message: tuple[bytes, str, str]) -> None:
    payload, protocol, provider = message
    fast, stdlib = all_outcomes(payload, protocol, provider)
    assert fast == stdlib


@pytest.mark.skipif(ORJSON is None, reason="compares the orjson and stdlib paths")
@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["request", "reply"]), st.sampled_from(["puppet", "choria"]))
def test_arbitrary_bytes_only_raise_typed_errors(payload: bytes, protocol: str, provider: str) -> None:
    fast, stdlib = all_outcomes(payload, protocol, provider)
    assert fast == stdlib


@pytest.mark.skipif(ORJSON is None, reason="compares the orjson and stdlib paths")
@FUZZ
@given(JSON_VALUES, st.sampled_from(["choria:transport:1", "io.choria.protocol.v2.transport"]))
def test_arbitrary_transport_documents_only_raise_typed_errors(extra: Any, protocol: str) -> None:
    document = {"protocol": protocol, "data": extra, "headers": extra}
    payload = json.dumps(document, allow_nan=False).encode("utf-8", "surrogatepass")
    for mode in ("request", "reply"):
        for provider in ("puppet", "choria"):
            fast, stdlib = all_outcomes(payload, mode, provider)
            assert fast == stdlib


def outcomes_with_and_without_fast_path(payload: bytes, protocol: str, provider: str) -> tuple[Any, Any]:
    """all_outcomes() with the well-formed-message shortcut on, then off (the general decoder only)."""
    import choria_broker_adapters.codec.protocol as protocol_module

    saved = protocol_module.USE_FAST_PATH
    try:
        protocol_module.USE_FAST_PATH = True
        with_fast_path = all_outcomes(payload, protocol, provider)
        protocol_module.USE_FAST_PATH = False
        general_only = all_outcomes(payload, protocol, provider)
    finally:
        protocol_module.USE_FAST_PATH = saved
    return with_fast_path, general_only


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["name"] for vector in VECTORS])
def test_fast_path_agrees_with_the_general_decoder_on_vectors(vector: dict[str, Any]) -> None:
    payload = vector["input"].encode()
    fast, general = outcomes_with_and_without_fast_path(
        payload, vector["ingest_protocol"], provider_for(vector["security"])
    )
    assert fast == general


@pytest.mark.skipif(ORJSON is None, reason="compares the orjson and stdlib paths")
@FUZZ
@given(mutated_messages())
def test_fast_path_agrees_with_the_general_decoder_on_mutations(message: tuple[bytes, str, str]) -> None:
    payload, protocol, provider = message
    fast, general = outcomes_with_and_without_fast_path(payload, protocol, provider)
    assert fast == general
