"""Test PKI and signed Choria messages for the verification tests, generated here.

A CA, a second "rogue" CA with the same name, node certificates (valid, expired, rogue-issued),
an Ed25519 token issuer (and a rogue one) with server tokens, and builders for v1/v2
registrations and replies signed with them. Each builder also returns the output document the
adapter must store, computed from what was generated (plain ASCII payloads, so Go's JSON
escaping is the same as json.dumps'), never from the project's decoder.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

OUTPUT_PROTOCOL = "choria:adapters:choria_streams:output:1"
DAY = datetime.timedelta(days=1)
FIXED_TIME = 1_700_000_000  # message time (seconds), independent of the wall clock


@dataclass(frozen=True)
class Identity:
    name: str
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_ca(common_name: str = "Test Choria CA") -> Identity:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY)
        .not_valid_after(now + 3650 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Identity(common_name, key, certificate)


def make_node(
    name: str,
    ca: Identity,
    *,
    not_before: datetime.datetime | None = None,
    days: float = 365,
    san: bool = True,
) -> Identity:
    key = _key()
    start = not_before or datetime.datetime.now(datetime.UTC) - DAY
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + days * DAY)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    return Identity(name, key, builder.sign(ca.key, hashes.SHA256()))


@dataclass(frozen=True)
class Pki:
    ca: Identity
    rogue_ca: Identity
    node1: Identity
    node2: Identity
    expired: Identity  # node3.example.net, expired yesterday
    rogue_node1: Identity  # node1.example.net issued by the rogue CA

    def write_ca(self, path: Path) -> Path:
        path.write_bytes(self.ca.certificate.public_bytes(serialization.Encoding.PEM))
        return path


@functools.cache
def pki() -> Pki:
    ca = make_ca()
    rogue = make_ca()  # same name, different key
    now = datetime.datetime.now(datetime.UTC)
    return Pki(
        ca=ca,
        rogue_ca=rogue,
        node1=make_node("node1.example.net", ca),
        node2=make_node("node2.example.net", ca),
        expired=make_node("node3.example.net", ca, not_before=now - 30 * DAY, days=29),
        rogue_node1=make_node("node1.example.net", rogue),
    )


def go_time(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def expected_output(payload: str, sender: str, seconds_or_text: str, request_id: str) -> bytes:
    return _dumps(
        {
            "protocol": OUTPUT_PROTOCOL,
            "data": payload,
            "sender": sender,
            "time": seconds_or_text,
            "requestid": request_id,
        }
    ).encode()


def registration_payload(name: str, tag: str) -> str:
    return _dumps(
        {"protocol": "choria:registration:inventorycontent:1", "content": {"identity": name, "tag": tag}}
    )


def v1_request_text(sender: str, payload: str, request_id: str) -> str:
    return _dumps(
        {
            "protocol": "choria:request:1",
            "message": payload,
            "envelope": {
                "requestid": request_id,
                "senderid": sender,
                "callerid": f"choria={sender}",
                "collective": "mcollective",
                "agent": "registration",
                "ttl": 60,
                "time": FIXED_TIME,
                "filter": {"fact": [], "cf_class": [], "agent": [], "identity": [], "compound": []},
            },
        }
    )


def rsa_sign(key: rsa.RSAPrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode()


def v1_transport(secure: dict[str, object], mc_sender: str) -> bytes:
    data = base64.b64encode(_dumps(secure).encode()).decode()
    return _dumps(
        {
            "protocol": "choria:transport:1",
            "data": data,
            "headers": {"reply-to": "dev.null", "mc_sender": mc_sender, "seen-by": []},
        }
    ).encode()


def v1_registration(
    signer: Identity | None,
    *,
    sender: str,
    tag: str = "t",
    request_id: str | None = None,
    mc_sender: str | None = None,
    tamper: bool = False,
) -> tuple[bytes, bytes]:
    """(wire bytes, expected stored document) of a v1 registration from `sender` signed by
    `signer` (None: an unsigned "insecure registration")."""
    request_id = request_id or hashlib.md5(f"{sender}{tag}".encode()).hexdigest()
    payload = registration_payload(sender, tag)
    text = v1_request_text(sender, payload, request_id)
    if signer is None:
        secure = {
            "protocol": "choria:secure:request:1",
            "message": text,
            "signature": base64.b64encode(b"insecure registration").decode(),
            "pubcert": "insecure registration",
        }
    else:
        signature = rsa_sign(signer.key, text.encode())
        if tamper:  # signed, then changed in transit
            payload = registration_payload(sender, tag + "X")
            text = v1_request_text(sender, payload, request_id)
        secure = {
            "protocol": "choria:secure:request:1",
            "message": text,
            "signature": signature,
            "pubcert": signer.pem,
        }
    wire = v1_transport(secure, mc_sender if mc_sender is not None else sender)
    return wire, expected_output(payload, sender, go_time(FIXED_TIME), request_id)


def v1_reply(sender: str, *, tamper: bool = False, with_hash: bool = True) -> bytes:
    text = _dumps(
        {
            "protocol": "choria:reply:1",
            "message": _dumps({"statuscode": 0, "data": {"pong": 1}}),
            "envelope": {"requestid": "r" * 32, "senderid": sender, "agent": "rpcutil", "time": FIXED_TIME},
        }
    )
    digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
    if tamper:
        text = text.replace("pong", "pinG")
    secure: dict[str, object] = {"protocol": "choria:secure:reply:1", "message": text}
    if with_hash:
        secure["hash"] = digest
    return v1_transport(secure, sender)


# -- v2 -----------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes_raw().hex()


def make_token(issuer: Ed25519PrivateKey, claims: dict[str, object], *, alg: str = "EdDSA") -> str:
    header = b64url(_dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64url(_dumps(claims).encode())
    signature = issuer.sign(f"{header}.{body}".encode())
    return f"{header}.{body}.{b64url(signature)}"


def server_claims(
    identity: str, key: Ed25519PrivateKey, issuer: Ed25519PrivateKey, **extra: object
) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "identity": identity,
        "collectives": ["choria"],
        "purpose": "choria_server",
        "public_key": public_hex(key),
        "iss": f"I-{public_hex(issuer)}",
        "exp": now + 3600,
        "nbf": now - 60,
        "iat": now - 60,
    }
    claims.update(extra)
    return {key: value for key, value in claims.items() if value is not None}


@dataclass(frozen=True)
class V2Keys:
    issuer: Ed25519PrivateKey
    rogue_issuer: Ed25519PrivateKey
    node1: Ed25519PrivateKey
    node2: Ed25519PrivateKey

    def token(
        self,
        identity: str,
        key: Ed25519PrivateKey,
        *,
        issuer: Ed25519PrivateKey | None = None,
        **extra: object,
    ) -> str:
        signer = issuer or self.issuer
        return make_token(signer, server_claims(identity, key, signer, **extra))


@functools.cache
def v2_keys() -> V2Keys:
    return V2Keys(*(Ed25519PrivateKey.generate() for _ in range(4)))


def v2_transport(secure: dict[str, object], sender: str) -> bytes:
    data = base64.b64encode(_dumps(secure).encode()).decode()
    return _dumps(
        {
            "protocol": "io.choria.protocol.v2.transport",
            "data": data,
            "headers": {"reply": "dev.null", "sender": sender},
        }
    ).encode()


def v2_registration(
    key: Ed25519PrivateKey | None,
    caller: str,
    *,
    sender: str,
    tag: str = "t",
    tamper: bool = False,
    signer: str | None = None,
) -> tuple[bytes, bytes]:
    """(wire bytes, expected stored document) of a v2 registration signed with `key`
    (None: the "insecure" signature), carrying the `caller` token."""
    payload = registration_payload(sender, tag)
    request_id = hashlib.md5(f"{sender}{tag}".encode()).hexdigest()[:27]
    nanos = FIXED_TIME * 10**9 + 123
    request = _dumps(
        {
            "protocol": "io.choria.protocol.v2.request",
            "message": base64.b64encode(payload.encode()).decode(),
            "id": request_id,
            "sender": sender,
            "caller": f"choria={sender}",
            "collective": "choria",
            "agent": "registration",
            "ttl": 60,
            "time": nanos,
        }
    ).encode()
    signature = key.sign(request) if key is not None else b"insecure"
    if tamper:
        request = request.replace(b'"ttl":60', b'"ttl":61')
    secure: dict[str, object] = {
        "protocol": "io.choria.protocol.v2.secure_request",
        "request": base64.b64encode(request).decode(),
        "signature": base64.b64encode(signature).decode(),
        "caller": caller,
    }
    if signer is not None:
        secure["signer"] = signer
    wire = v2_transport(secure, sender)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(FIXED_TIME)) + ".000000123Z"
    return wire, expected_output(payload, sender, text, request_id)


def v2_reply(key: Ed25519PrivateKey | None, token: str | None, *, sender: str, tamper: bool = False) -> bytes:
    reply = _dumps(
        {
            "protocol": "io.choria.protocol.v2.reply",
            "message": base64.b64encode(b'{"statuscode":0}').decode(),
            "request": "x" * 27,
            "sender": sender,
            "agent": "rpcutil",
            "time": FIXED_TIME * 10**9,
        }
    ).encode()
    secure: dict[str, object] = {
        "protocol": "io.choria.protocol.v2.secure_reply",
        "reply": base64.b64encode(reply).decode(),
        "hash": base64.b64encode(hashlib.sha256(reply).digest()).decode(),
    }
    if key is not None:
        secure["signature"] = base64.b64encode(key.sign(reply)).decode()
    if token is not None:
        secure["sender"] = token
    if tamper:
        changed = reply.replace(b'"agent":"rpcutil"', b'"agent":"rpcutiX"')
        secure["reply"] = base64.b64encode(changed).decode()
        secure["hash"] = base64.b64encode(hashlib.sha256(changed).digest()).decode()
    return v2_transport(secure, sender)
