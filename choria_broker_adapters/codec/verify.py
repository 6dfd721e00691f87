"""Who sent it: signature verification of decoded Choria messages (docs/verification.md).

    verifier = Verifier(Trust(ca=load_ca_bundle(path), issuers=parse_issuers({...})))
    verdict = verifier.verify(decode(payload, ..., keep_secure=True))   # never raises

Pure apart from the clock: the trust material is loaded at the edge (`load_ca_bundle`,
`parse_issuers`) and the verifier only computes. What is checked:

- v1 request: the `pubcert` certificate was issued by a CA of the configured bundle, is within
  its validity period, carries the sender as its CN or a DNS SAN, the transport `mc_sender` is
  the sender too, and its RSA key made the PKCS#1 v1.5 SHA-256 `signature` over the exact
  `message` bytes.
- v1 reply: `hash` is the SHA-256 of the exact `message` bytes (v1 replies carry no signature).
- v2 request: the `caller` token (or the delegated `signer` token) is an EdDSA JWT issued by a
  configured issuer, in its validity period, of an allowed purpose, naming the sender as its
  identity; its `public_key` made the Ed25519 `signature` over the exact request bytes.
- v2 reply: `hash` as for v1, and the `sender` token (a server token naming the reply's
  sender) holds the key of the Ed25519 `signature` over the exact reply bytes.

Checking a certificate chain or a token's issuer signature is the expensive part and does not
change from one message to the next, so its outcome (including a failure) is cached by the
SHA-256 fingerprint of the certificate or token text, in a bounded cache whose entries expire.
What depends on the message or the clock (names, validity period, the message signature) is
checked every time.

Every failure is a Verdict with a stable `kind` (a label for counters and log rate limits) and
a short human `reason` that may name identities.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from choria_broker_adapters.codec.protocol.model import Envelope

OFF = "off"
WARN = "warn"
ENFORCE = "enforce"
VERIFY_MODES = (OFF, WARN, ENFORCE)

# The header a `warn` adapter adds to every stored message.
VERIFIED_HEADER = "Choria-Verified"

# Failure kinds: the label values of the per-reason counter.
UNSIGNED = "unsigned"
MALFORMED = "malformed"
UNTRUSTED = "untrusted"
EXPIRED = "expired"
NAME = "name"
PURPOSE = "purpose"
SIGNATURE = "signature"
HASH = "hash"
NO_TRUST = "no_trust"
INTERNAL = "internal"
FAILURE_KINDS = (UNSIGNED, MALFORMED, UNTRUSTED, EXPIRED, NAME, PURPOSE, SIGNATURE, HASH, NO_TRUST, INTERNAL)

# v1 `pubcert` values of messages sent without a certificate.
INSECURE_PUBCERTS = frozenset({"insecure", "insecure registration"})
# The v2 signature bytes of an unsigned request.
INSECURE_SIGNATURE = b"insecure"

SERVER_PURPOSE = "choria_server"
CLIENT_PURPOSE = "choria_client_id"

DEFAULT_CACHE_SIZE = 4096
DEFAULT_CACHE_TTL = 600.0


@dataclass(frozen=True, slots=True)
class Verdict:
    verified: bool
    kind: str  # "verified" or one of FAILURE_KINDS
    reason: str

    def __str__(self) -> str:
        return self.reason


VERIFIED = Verdict(True, "verified", "verified")


def _fail(kind: str, reason: str) -> Verdict:
    return Verdict(False, kind, reason)


class TrustError(Exception):
    """Trust material that cannot be used; `reason` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Trust material (loaded at the edge)
# ---------------------------------------------------------------------------------------------


def parse_ca_bundle(data: bytes) -> tuple[x509.Certificate, ...]:
    """Every certificate of a PEM bundle; TrustError when there is none or one is unreadable."""
    try:
        certificates = tuple(x509.load_pem_x509_certificates(data))
    except ValueError:
        raise TrustError("not a PEM certificate bundle") from None
    return certificates


def load_ca_bundle(path: str | Path) -> tuple[x509.Certificate, ...]:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise TrustError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        return parse_ca_bundle(data)
    except TrustError as error:
        raise TrustError(f"{path} is {error.reason}") from None


def parse_issuer_key(text: str) -> Ed25519PublicKey:
    """An issuer's Ed25519 public key from its 64 hex digits."""
    try:
        raw = bytes.fromhex(text.strip())
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise TrustError(f"{text!r} is not an ed25519 public key; expected 64 hex digits") from None


def parse_issuers(issuers: Mapping[str, str]) -> dict[str, Ed25519PublicKey]:
    return {name: parse_issuer_key(text) for name, text in issuers.items()}


@dataclass(frozen=True)
class Trust:
    """What messages are verified against: CA certificates (v1) and token issuers (v2)."""

    ca: tuple[x509.Certificate, ...] = ()
    issuers: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------

_Value = TypeVar("_Value")


class ExpiringCache(Generic[_Value]):
    """At most `size` entries, each forgotten `ttl` seconds after it was stored; the least
    recently used entry makes room."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self._entries: OrderedDict[bytes, tuple[float, _Value]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, now: float) -> _Value | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: bytes, value: _Value, now: float) -> None:
        self._entries[key] = (now + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


@dataclass(frozen=True, slots=True)
class _Certificate:
    """A pubcert whose chain was checked: its key, names and validity, or why it is refused."""

    failure: Verdict | None
    key: Any = None
    names: frozenset[str] = frozenset()
    shown_name: str = ""
    not_before: float = 0.0
    not_after: float = 0.0


@dataclass(frozen=True, slots=True)
class _Token:
    """A JWT whose issuer signature was checked: its claims, or why it is refused."""

    failure: Verdict | None
    key: Ed25519PublicKey | None = None
    identity: str = ""
    purpose: str = ""
    permissions: frozenset[str] = frozenset()
    not_before: float | None = None
    expires: float | None = None


# ---------------------------------------------------------------------------------------------
# The verifier
# ---------------------------------------------------------------------------------------------


class Verifier:
    """Verifies envelopes decoded with keep_secure=True against one Trust."""

    def __init__(
        self,
        trust: Trust,
        *,
        clock: Callable[[], float] = time.time,
        cache_size: int = DEFAULT_CACHE_SIZE,
        cache_ttl: float = DEFAULT_CACHE_TTL,
    ) -> None:
        self.trust = trust
        self.clock = clock
        self.certificates: ExpiringCache[_Certificate] = ExpiringCache(cache_size, cache_ttl)
        self.tokens: ExpiringCache[_Token] = ExpiringCache(cache_size, cache_ttl)
        # Tokens name their issuer as "I-" and the issuer's public key in hex.
        self._issuer_ids: dict[str, Ed25519PublicKey] = {}
        for key in trust.issuers.values():
            raw = key.public_bytes_raw()
            self._issuer_ids[f"I-{raw.hex()}"] = key

    def verify(self, envelope: Envelope) -> Verdict:
        """The verdict on one message; never raises."""
        secure = envelope.secure
        if secure is None:
            return _fail(INTERNAL, "decoded without its secure layer")
        try:
            if secure.version == 1:
                if secure.request:
                    return self._v1_request(envelope)
                return _check_hash(secure.signed, secure.digest)
            if secure.request:
                return self._v2_request(envelope)
            return self._v2_reply(envelope)
        except Exception as error:  # a verifier bug must cost one message, never a worker
            return _fail(INTERNAL, f"verification error ({type(error).__name__})")

    # -- v1 -----------------------------------------------------------------------------------

    def _v1_request(self, envelope: Envelope) -> Verdict:
        secure = envelope.secure
        assert secure is not None
        if secure.credential in INSECURE_PUBCERTS or secure.signature == "insecure":
            if secure.credential == "insecure registration":
                return _fail(UNSIGNED, "unsigned registration")
            return _fail(UNSIGNED, "unsigned request")
        if not self.trust.ca:
            return _fail(NO_TRUST, "no CA is configured to verify version 1 messages")
        now = self.clock()
        certificate = self._certificate(secure.credential, now)
        if certificate.failure is not None:
            return certificate.failure
        if now < certificate.not_before:
            return _fail(EXPIRED, "certificate not yet valid")
        if now > certificate.not_after:
            return _fail(EXPIRED, "certificate expired")
        sender = envelope.sender
        if sender not in certificate.names:
            return _fail(NAME, f"certificate name {certificate.shown_name} is not the sender {sender}")
        if secure.transport_sender != sender:
            return _fail(NAME, f"transport mc_sender {secure.transport_sender} is not the sender {sender}")
        signature = _base64(secure.signature)
        if signature is None:
            return _fail(MALFORMED, "signature is not base64")
        try:
            certificate.key.verify(signature, secure.signed, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return _fail(SIGNATURE, "signature does not match")
        return VERIFIED

    def _certificate(self, pem: str, now: float) -> _Certificate:
        fingerprint = hashlib.sha256(pem.encode("utf-8", "surrogatepass")).digest()
        cached = self.certificates.get(fingerprint, now)
        if cached is None:
            cached = self._check_certificate(pem, now)
            self.certificates.put(fingerprint, cached, now)
        return cached

    def _check_certificate(self, pem: str, now: float) -> _Certificate:
        try:
            certificate = x509.load_pem_x509_certificate(pem.encode("utf-8", "surrogatepass"))
            key = certificate.public_key()
            names = _certificate_names(certificate)
            not_before = certificate.not_valid_before_utc.timestamp()
            not_after = certificate.not_valid_after_utc.timestamp()
        except (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension):
            return _Certificate(_fail(MALFORMED, "pubcert is not a valid PEM certificate"))
        if not isinstance(key, rsa.RSAPublicKey):
            return _Certificate(_fail(MALFORMED, "certificate key is not RSA"))
        if _is_ca(certificate):
            return _Certificate(_fail(UNTRUSTED, "certificate is a CA certificate, not a node's"))
        if not any(_issued_by(certificate, ca, now) for ca in self.trust.ca):
            return _Certificate(_fail(UNTRUSTED, "certificate not issued by the configured CA"))
        shown = sorted(names)[0] if names else "(none)"
        return _Certificate(None, key, frozenset(names), shown, not_before, not_after)

    # -- v2 -----------------------------------------------------------------------------------

    def _v2_request(self, envelope: Envelope) -> Verdict:
        secure = envelope.secure
        assert secure is not None
        signature = _base64(secure.signature)
        if signature is None:
            return _fail(MALFORMED, "signature is not base64")
        if signature == INSECURE_SIGNATURE:
            return _fail(UNSIGNED, "unsigned request")
        if not self._issuer_ids:
            return _fail(NO_TRUST, "no issuer is configured to verify version 2 messages")
        now = self.clock()
        sender = envelope.sender
        caller = self._token(secure.credential, now)
        if caller.failure is not None:
            return caller.failure
        problem = _token_time(caller, now) or _caller_purpose(caller)
        if problem is not None:
            return problem
        if caller.identity != sender:
            return _fail(NAME, f"token identity {caller.identity} is not the sender {sender}")
        if secure.transport_sender and secure.transport_sender != sender:
            return _fail(NAME, f"transport sender {secure.transport_sender} is not the sender {sender}")
        key = caller.key
        if secure.signer:
            signer = self._token(secure.signer, now)
            if signer.failure is not None:
                return _fail(signer.failure.kind, f"signer {signer.failure.reason}")
            problem = _token_time(signer, now)
            if problem is not None:
                return _fail(problem.kind, f"signer {problem.reason}")
            if signer.purpose != CLIENT_PURPOSE or "authentication_delegator" not in signer.permissions:
                return _fail(PURPOSE, "signer token is not an authentication delegator")
            key = signer.key
        assert key is not None
        try:
            key.verify(signature, secure.signed)
        except InvalidSignature:
            return _fail(SIGNATURE, "signature does not match")
        return VERIFIED

    def _v2_reply(self, envelope: Envelope) -> Verdict:
        secure = envelope.secure
        assert secure is not None
        hashed = _check_hash(secure.signed, secure.digest)
        if not hashed.verified:
            return hashed
        if not secure.signature or not secure.credential:
            return _fail(UNSIGNED, "unsigned reply")
        signature = _base64(secure.signature)
        if signature is None:
            return _fail(MALFORMED, "signature is not base64")
        if not self._issuer_ids:
            return _fail(NO_TRUST, "no issuer is configured to verify version 2 messages")
        now = self.clock()
        token = self._token(secure.credential, now)
        if token.failure is not None:
            return token.failure
        problem = _token_time(token, now)
        if problem is not None:
            return problem
        if token.purpose != SERVER_PURPOSE:
            return _fail(PURPOSE, f"token purpose {token.purpose or '(none)'} is not {SERVER_PURPOSE}")
        if token.identity != envelope.sender:
            return _fail(NAME, f"token identity {token.identity} is not the sender {envelope.sender}")
        assert token.key is not None
        try:
            token.key.verify(signature, secure.signed)
        except InvalidSignature:
            return _fail(SIGNATURE, "signature does not match")
        return VERIFIED

    def _token(self, text: str, now: float) -> _Token:
        fingerprint = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
        cached = self.tokens.get(fingerprint, now)
        if cached is None:
            cached = self._check_token(text)
            self.tokens.put(fingerprint, cached, now)
        return cached

    def _check_token(self, text: str) -> _Token:
        if not text:
            return _Token(_fail(UNSIGNED, "no token"))
        parts = text.split(".")
        if len(parts) != 3:
            return _Token(_fail(MALFORMED, "token is not a JWT"))
        header = _json_part(parts[0])
        claims = _json_part(parts[1])
        signature = _base64url(parts[2])
        if header is None or claims is None or signature is None:
            return _Token(_fail(MALFORMED, "token is not a JWT"))
        if header.get("alg") != "EdDSA":
            return _Token(_fail(MALFORMED, "token is not EdDSA signed"))
        issuer = self._issuer_ids.get(claims.get("iss")) if isinstance(claims.get("iss"), str) else None
        if issuer is None:
            return _Token(_fail(UNTRUSTED, "token not issued by a configured issuer"))
        try:
            issuer.verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"))
        except (InvalidSignature, UnicodeEncodeError):
            return _Token(_fail(UNTRUSTED, "token not issued by a configured issuer"))
        public_key = claims.get("public_key")
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key))
        except (TypeError, ValueError):
            return _Token(_fail(MALFORMED, "token public_key is not an ed25519 key"))
        identity = claims.get("identity")
        purpose = claims.get("purpose")
        permissions = claims.get("permissions")
        granted = (
            frozenset(name for name, value in permissions.items() if value is True)
            if isinstance(permissions, dict)
            else frozenset()
        )
        return _Token(
            None,
            key,
            identity if isinstance(identity, str) else "",
            purpose if isinstance(purpose, str) else "",
            granted,
            _number(claims.get("nbf")),
            _number(claims.get("exp")),
        )


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _check_hash(signed: bytes, digest: str) -> Verdict:
    if not digest:
        return _fail(UNSIGNED, "reply has no hash")
    expected = _base64(digest)
    if expected is None:
        return _fail(MALFORMED, "hash is not base64")
    if not hmac.compare_digest(expected, hashlib.sha256(signed).digest()):
        return _fail(HASH, "hash does not match")
    return VERIFIED


def _base64(text: str) -> bytes | None:
    # Go's decoder skips CR and LF inside base64.
    try:
        return base64.b64decode(text.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        return None


def _base64url(text: str) -> bytes | None:
    if "=" in text:
        return None  # JWT parts carry no padding
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _json_part(text: str) -> dict[str, Any] | None:
    raw = _base64url(text)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _number(value: Any) -> float | None:
    if type(value) in (int, float):
        return float(value)
    return None


def _token_time(token: _Token, now: float) -> Verdict | None:
    if token.expires is None:
        return _fail(EXPIRED, "token has no expiry")
    if now >= token.expires:
        return _fail(EXPIRED, "token expired")
    if token.not_before is not None and now < token.not_before:
        return _fail(EXPIRED, "token not yet valid")
    return None


def _caller_purpose(token: _Token) -> Verdict | None:
    if token.purpose == SERVER_PURPOSE:
        return None
    if token.purpose == CLIENT_PURPOSE:
        if "fleet_management" in token.permissions:
            return None
        return _fail(PURPOSE, "client token lacks fleet management permission")
    return _fail(PURPOSE, f"token purpose {token.purpose or '(none)'} is not allowed")


def _certificate_names(certificate: x509.Certificate) -> set[str]:
    names = {
        value
        for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if isinstance(value := attribute.value, str)
    }
    try:
        alternative = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return names
    names.update(alternative.value.get_values_for_type(x509.DNSName))
    return names


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def _issued_by(certificate: x509.Certificate, ca: x509.Certificate, now: float) -> bool:
    """`certificate` carries a valid signature of `ca`, which is itself within its validity."""
    try:
        if certificate.issuer != ca.subject:
            return False
        if not ca.not_valid_before_utc.timestamp() <= now <= ca.not_valid_after_utc.timestamp():
            return False
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True
