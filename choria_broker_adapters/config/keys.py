"""The key table: every broker.conf key the runtime reads, with its validator, default and
meaning. It drives validation (settings), defaults, `check`'s rows and the README key tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import voluptuous as vol

from choria_broker_adapters.codec.verify import OFF, VERIFY_MODES
from choria_broker_adapters.config import validators as v
from choria_broker_adapters.core.choices import (
    INGEST_PROTOCOLS,
    LOG_LEVELS,
    PUBLISH_MODES,
    SECURITY_PROVIDERS,
    STORAGE_TYPES,
    UNSUPPORTED_SECURITY_PROVIDERS,
)

ADAPTERS_KEY = "plugin.choria.adapters"
ADAPTER_PREFIX = "plugin.choria.adapter."


@dataclass(frozen=True, slots=True)
class AdapterKey:
    suffix: str  # after plugin.choria.adapter.NAME.
    attribute: str  # of AdapterSettings
    validate: v.Validator
    default: Any  # None: required or derived
    doc: str
    go_default: bool = True  # the Go broker knows this key

    @property
    def is_duration(self) -> bool:
        return isinstance(self.validate, v.Duration)

    def default_text(self) -> str:
        if isinstance(self.default, tuple):
            return ", ".join(self.default)
        return "" if self.default is None else str(self.default)


ADAPTER_KEYS: tuple[AdapterKey, ...] = (
    AdapterKey(
        "queue_len", "queue_len", v.integer(1, 10_000_000), 1000, "queue capacity between ingest and stream"
    ),
    AdapterKey(
        "ingest.topic", "ingest_topic", v.subscribe_subject, None, "subject to queue-subscribe to (required)"
    ),
    AdapterKey(
        "ingest.protocol", "ingest_protocol", v.one_of(*INGEST_PROTOCOLS), "reply", "request or reply"
    ),
    AdapterKey("ingest.workers", "ingest_workers", v.integer(1, 100), 10, "ingest subscriptions"),
    AdapterKey(
        "ingest.verify",
        "ingest_verify",
        v.one_of(*VERIFY_MODES),
        OFF,
        "signature verification: off, warn or enforce",
        False,
    ),
    AdapterKey(
        "ingest.verify_ca",
        "ingest_verify_ca",
        v.text,
        None,
        "CA bundle for v1 verification (default: the security provider's CA)",
        False,
    ),
    AdapterKey(
        "stream.topic", "stream_topic", v.topic_template, None, "output subject; %s = sender (default NAME)"
    ),
    AdapterKey("stream.workers", "stream_workers", v.integer(1, 100), 10, "JetStream publishers"),
    AdapterKey(
        "stream.servers", "stream_servers", v.server_list, (), "JetStream servers (default: middleware)"
    ),
    AdapterKey(
        "stream.ack_timeout", "stream_ack_timeout", v.Duration(0.01, 300), 5.0, "wait for one ack", False
    ),
    AdapterKey(
        "stream.retry_budget",
        "stream_retry_budget",
        v.Duration(0, 86400),
        60.0,
        "retry time per message",
        False,
    ),
    AdapterKey(
        "stream.max_pending", "stream_max_pending", v.integer(1, 65536), 512, "in flight per publisher", False
    ),
    AdapterKey(
        "stream.publish",
        "stream_publish",
        v.one_of(*PUBLISH_MODES),
        "auto",
        "batched (fast-ingest) or acked publishing; auto: batched when server and stream allow",
        False,
    ),
    AdapterKey(
        "shutdown_grace", "shutdown_grace", v.Duration(0, 3600), 10.0, "time to confirm queue on stop", False
    ),
    AdapterKey(
        "stream.name", "stream_name", v.stream_name, None, "stream name (default CHORIA_<NAME>)", False
    ),
    AdapterKey(
        "stream.subjects", "stream_subjects", v.subject_list, None, "stream subjects (derived)", False
    ),
    AdapterKey(
        "stream.max_age", "stream_max_age", v.Duration(0), 7 * 86400.0, "keep messages (0 = forever)", False
    ),
    AdapterKey("stream.storage", "stream_storage", v.one_of(*STORAGE_TYPES), "file", "file or memory", False),
    AdapterKey("stream.replicas", "stream_replicas", v.integer(1, 5), 1, "stream replicas", False),
    AdapterKey(
        "stream.max_msgs_per_subject",
        "stream_max_msgs_per_subject",
        vol.All(v.integer(-1, 2**63 - 1), v.not_zero),
        -1,
        "messages kept per node subject (-1 = unlimited)",
        False,
    ),
    AdapterKey(
        "stream.duplicate_window",
        "stream_duplicate_window",
        v.Duration(0.1),
        120.0,
        "de-duplication window",
        False,
    ),
)
ADAPTER_KEYS_BY_SUFFIX = {key.suffix: key for key in ADAPTER_KEYS}
# `type` is read apart (it selects the adapter); `stream.type` is the Choria docs' misplaced copy.
KNOWN_SUFFIXES = ("type", "stream.type", *ADAPTER_KEYS_BY_SUFFIX)


@dataclass(frozen=True, slots=True)
class ProcessKey:
    key: str
    attribute: str  # of Settings
    validate: v.Validator
    default: Any
    doc: str
    env: str | None = None  # a variable that overrides the value, as the Go broker reads it
    secret: bool = False  # never shown: `check` prints a mask

    @property
    def is_duration(self) -> bool:
        return isinstance(self.validate, v.Duration)


_PROVIDER = v.one_of(
    *SECURITY_PROVIDERS,
    refused={
        name: "is a Go broker provider this runtime does not support"
        for name in UNSUPPORTED_SECURITY_PROVIDERS
    },
)

# In the order `check` lists them. The middleware keys are resolved together (see settings).
PROCESS_KEYS: tuple[ProcessKey, ...] = (
    ProcessKey("identity", "identity", v.text, None, "the node's identity (default: the host's FQDN)"),
    ProcessKey("logfile", "logfile", v.text, "stdout", "stdout, stderr, discard or a file"),
    ProcessKey("loglevel", "loglevel", v.one_of(*LOG_LEVELS), "info", "log level"),
    ProcessKey("plugin.security.provider", "security_provider", _PROVIDER, "puppet", "security provider"),
    ProcessKey(
        "plugin.choria.stats_address", "stats_address", v.text, "127.0.0.1", "statistics listen address"
    ),
    ProcessKey("plugin.choria.stats_port", "stats_port", v.integer(0, 65535), 0, "statistics port (0: off)"),
    ProcessKey(
        "plugin.choria.network.connect_timeout",
        "connect_timeout",
        v.Duration(0.001, 120),
        2.0,
        "per-attempt connect timeout",
    ),
    ProcessKey("plugin.choria.ssldir", "ssldir", v.text, None, "puppet provider ssl directory"),
    ProcessKey(
        "plugin.security.file.certificate", "file_certificate", v.text, None, "file provider certificate"
    ),
    ProcessKey("plugin.security.file.key", "file_key", v.text, None, "file provider private key"),
    ProcessKey("plugin.security.file.ca", "file_ca", v.text, None, "file provider CA"),
    ProcessKey(
        "plugin.security.choria.certificate",
        "choria_certificate",
        v.text,
        None,
        "choria provider certificate",
    ),
    ProcessKey("plugin.security.choria.key", "choria_key", v.text, None, "choria provider private key"),
    ProcessKey("plugin.security.choria.ca", "choria_ca", v.text, None, "choria provider CA"),
    ProcessKey("plugin.nats.user", "nats_user", v.text, None, "NATS user", env="MCOLLECTIVE_NATS_USERNAME"),
    ProcessKey(
        "plugin.nats.pass",
        "nats_password",
        v.text,
        None,
        "NATS password",
        env="MCOLLECTIVE_NATS_PASSWORD",
        secret=True,
    ),
    ProcessKey(
        "plugin.nats.credentials",
        "nats_credentials",
        v.text,
        None,
        "NATS .creds file",
        env="MCOLLECTIVE_NATS_CREDENTIALS",
    ),
)
PROCESS_KEYS_BY_NAME = {key.key: key for key in PROCESS_KEYS}

# Keys that pick the Choria network servers, in the Go broker's order of precedence.
MIDDLEWARE_KEYS: dict[str, v.Validator] = {
    "plugin.choria.federation_middleware_hosts": v.server_list,
    "plugin.choria.middleware_hosts": v.server_list,
    "plugin.choria.broker_network": v.boolean,
    "plugin.choria.network.client_port": v.integer(1, 65535),
}

SECRET_KEYS = frozenset(key.key for key in PROCESS_KEYS if key.secret)
DURATION_KEYS = frozenset(
    {key.suffix for key in ADAPTER_KEYS if key.is_duration}
    | {key.key for key in PROCESS_KEYS if key.is_duration}
)


def is_duration_key(key: str) -> bool:
    """Whether `key` (a full key or an adapter key suffix) holds a duration in seconds."""
    return any(key == name or key.endswith("." + name) for name in DURATION_KEYS)
