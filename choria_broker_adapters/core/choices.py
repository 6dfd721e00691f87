"""The closed sets of words broker.conf accepts, with what each one means."""

from __future__ import annotations

LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
INGEST_PROTOCOLS = ("request", "reply")
STORAGE_TYPES = ("file", "memory")
# stream.publish: fast-ingest batches, per-message acks, or batches where JetStream allows them.
PUBLISH_MODES = ("auto", "batched", "acked")

SECURITY_PROVIDERS = ("puppet", "file", "choria")
# Go broker providers this runtime does not implement: refused with that reason, not as typos.
UNSUPPORTED_SECURITY_PROVIDERS = ("pkcs11", "certmanager")
# The choria provider (JWTs and ed25519) speaks protocol v2; every other one is x509 and v1.
ED25519_PROVIDERS = ("choria",)


def protocol_version_for(security_provider: str) -> int:
    """The one Choria protocol version a broker with this security provider decodes."""
    return 2 if security_provider in ED25519_PROVIDERS else 1
