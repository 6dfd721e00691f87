"""Typed, validated settings from raw broker.conf options.

Raw options (brokerconf) → one `Settings` for the process and one `AdapterSettings` per
adapter named in `plugin.choria.adapters`, with the Go broker's defaults. Each value keeps
its provenance (file:line, "default" or an environment variable) for `check`.

Unlike the Go broker, which stops at the first problem or ignores it, every problem is
collected and reported at once, each naming file, line, key, the bad value and what is
expected. Pure: the only I/O is in `load_settings`, at the edge.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import voluptuous as vol

from choria_broker_adapters.adapters.registry import ADAPTER_TYPES, RETIRED_TYPES, known_type_names
from choria_broker_adapters.codec.verify import (
    OFF,
    VERIFY_MODES,
    Trust,
    TrustError,
    load_ca_bundle,
    parse_issuers,
)
from choria_broker_adapters.config.brokerconf import Problem, RawConfig, RawOption, Source, read_config
from choria_broker_adapters.jetstream.plan import derive_subjects, format_duration, subjects_problem

ADAPTERS_KEY = "plugin.choria.adapters"
ADAPTER_PREFIX = "plugin.choria.adapter."
ADAPTER_NAME = re.compile(r"[A-Za-z0-9_-]+")
DEFAULT = "default"

# ---------------------------------------------------------------------------------------------
# Value validators: each turns the raw string into a typed value or raises vol.Invalid with a
# message that says what was expected. They also accept already-typed defaults unchanged.
# ---------------------------------------------------------------------------------------------

_GO_INTEGER = re.compile(r"[+-]?[0-9]+")
_GO_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
_LONG_UNITS = {
    "w": 7 * 86400,
    "W": 7 * 86400,
    "d": 86400,
    "D": 86400,
    "M": 30 * 86400,
    "Y": 365 * 86400,
    "y": 365 * 86400,
}


def parse_integer(text: str) -> int:
    """A decimal integer as Go's strconv.Atoi reads it (sign and ASCII digits only)."""
    if not _GO_INTEGER.fullmatch(text):
        raise ValueError(text)
    return int(text)


def parse_duration(text: str) -> float:
    """Seconds from a Choria duration: `30` (seconds), `1w`, `2d`, `1.5M`, or Go syntax `1h30m`, `300ms`."""
    if text.isascii() and text.isdigit():
        return float(text)
    if text and text[-1] in _LONG_UNITS:
        number = text[:-1]
        if re.fullmatch(r"[0-9]*\.?[0-9]+", number):
            return float(number) * _LONG_UNITS[text[-1]]
        raise ValueError(text)
    position, total = 0, 0.0
    for match in _GO_DURATION_PART.finditer(text):
        if match.start() != position:
            raise ValueError(text)
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise ValueError(text)
    return total


def integer(minimum: int, maximum: int, *, allow: tuple[int, ...] = ()) -> Callable[[Any], int]:
    def validate(value: Any) -> int:
        if isinstance(value, int):
            number = value
        else:
            try:
                number = parse_integer(str(value))
            except ValueError:
                raise vol.Invalid(f"{value!r} is not a whole number; expected {expected}") from None
        if number in allow or minimum <= number <= maximum:
            return number
        raise vol.Invalid(f"{number} is out of range; expected {expected}")

    special = f" or {' or '.join(str(a) for a in allow)}" if allow else ""
    expected = f"a whole number from {minimum} to {maximum}{special}"
    return validate


def duration(minimum: float, maximum: float | None = None) -> Callable[[Any], float]:
    def validate(value: Any) -> float:
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            try:
                seconds = parse_duration(str(value))
            except ValueError:
                raise vol.Invalid(
                    f"{value!r} is not a duration; expected seconds (30) "
                    "or a duration like 500ms, 5s, 2m, 1h, 7d, 1w"
                ) from None
        if seconds < minimum or (maximum is not None and seconds > maximum):
            upper = f" and at most {format_duration(maximum)}" if maximum is not None else ""
            raise vol.Invalid(f"{value} is out of range; expected at least {format_duration(minimum)}{upper}")
        return seconds

    return validate


def one_of(*choices: str) -> Callable[[Any], str]:
    def validate(value: Any) -> str:
        if value in choices:
            return str(value)
        hint = _did_you_mean(str(value), choices)
        raise vol.Invalid(f"{value!r} is not allowed; expected one of {', '.join(choices)}{hint}")

    return validate


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "yes", "true", "y", "t"}:
        return True
    if text in {"0", "no", "false", "n", "f"}:
        return False
    raise vol.Invalid(f"{value!r} is not a boolean; expected true or false")


_SERVER = re.compile(
    r"(?:(?P<scheme>[a-z][a-z0-9+.-]*)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(?P<port>[0-9]+)"
)


def server_url(item: str) -> str:
    """`host:port` or `scheme://host:port` → a URL for the NATS client; the port is mandatory."""
    match = _SERVER.fullmatch(item)
    if not match:
        raise vol.Invalid(
            f"server {item!r} is not host:port; expected host:port or nats://host:port, tls://host:port "
            "(the port is required, e.g. js1.example.net:4222)"
        )
    scheme = match.group("scheme") or "nats"
    if scheme not in {"nats", "tls"}:
        raise vol.Invalid(f"server {item!r} has scheme {scheme!r}; expected nats:// or tls://")
    if int(match.group("port")) > 65535:
        raise vol.Invalid(f"server {item!r} has port {match.group('port')}; expected a port from 0 to 65535")
    return f"{scheme}://{match.group('host')}:{match.group('port')}"


def server_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return value
    items = [item.strip() for item in str(value).split(",")]
    if any(not item for item in items):
        raise vol.Invalid(f"{value!r} has an empty entry; expected a comma separated list of host:port")
    return tuple(server_url(item) for item in items)


_TOKEN_FORBIDDEN = re.compile(r"[\s*>]")


def _subject_problem(subject: str, *, wildcards: bool) -> str | None:
    if not subject:
        return "it is empty"
    tokens = subject.split(".")
    for index, token in enumerate(tokens):
        if not token:
            return "it has an empty token (leading, trailing or double dot)"
        if re.search(r"\s", token):
            return "it contains whitespace"
        if wildcards:
            if token == ">" and index != len(tokens) - 1:
                return "'>' may only be the last token"
            if ("*" in token or ">" in token) and token not in {"*", ">"}:
                return "wildcards must be whole tokens"
        elif _TOKEN_FORBIDDEN.search(token):
            return "it contains a wildcard ('*' or '>'), which cannot be published to"
    return None


def subscribe_subject(value: Any) -> str:
    problem = _subject_problem(str(value), wildcards=True)
    if problem:
        raise vol.Invalid(f"{value!r} is not a valid NATS subject: {problem}")
    return str(value)


def topic_template(value: Any) -> str:
    """The output topic: a publish subject once every `%s` is replaced by a sender identity."""
    problem = _subject_problem(str(value).replace("%s", "sender"), wildcards=False)
    if problem:
        raise vol.Invalid(f"{value!r} is not a valid publish subject template: {problem}")
    return str(value)


def subject_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return value
    return tuple(subscribe_subject(item.strip()) for item in str(value).split(","))


_STREAM_NAME_FORBIDDEN = re.compile(r"[\s.*>/\\]")


def stream_name(value: Any) -> str:
    text = str(value)
    if not text or _STREAM_NAME_FORBIDDEN.search(text) or len(text) > 255:
        raise vol.Invalid(
            f"{value!r} is not a valid JetStream stream name; expected letters, digits, - and _"
        )
    return text


def not_zero(value: int) -> int:
    if value == 0:
        raise vol.Invalid("0 is not allowed; expected -1 (unlimited) or a positive number")
    return value


def derive_stream_name(adapter_name: str) -> str:
    return "CHORIA_" + adapter_name.upper().replace("-", "_")


# ---------------------------------------------------------------------------------------------
# Adapter keys
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdapterKey:
    suffix: str  # after plugin.choria.adapter.NAME.
    attribute: str
    validate: Callable[[Any], Any]
    default: Any  # None: required or derived
    doc: str
    go_default: bool = True  # the Go broker knows this key

    def default_text(self) -> str:
        if isinstance(self.default, tuple):
            return ", ".join(self.default)
        return "" if self.default is None else str(self.default)


ADAPTER_KEYS: tuple[AdapterKey, ...] = (
    AdapterKey(
        "queue_len", "queue_len", integer(1, 10_000_000), 1000, "queue capacity between ingest and stream"
    ),
    AdapterKey(
        "ingest.topic", "ingest_topic", subscribe_subject, None, "subject to queue-subscribe to (required)"
    ),
    AdapterKey("ingest.protocol", "ingest_protocol", one_of("request", "reply"), "reply", "request or reply"),
    AdapterKey("ingest.workers", "ingest_workers", integer(1, 100), 10, "ingest subscriptions"),
    AdapterKey(
        "ingest.verify",
        "ingest_verify",
        one_of(*VERIFY_MODES),
        OFF,
        "signature verification: off, warn or enforce",
        False,
    ),
    AdapterKey(
        "ingest.verify_ca",
        "ingest_verify_ca",
        str,
        None,
        "CA bundle for v1 verification (default: the security provider's CA)",
        False,
    ),
    AdapterKey(
        "stream.topic", "stream_topic", topic_template, None, "output subject; %s = sender (default NAME)"
    ),
    AdapterKey("stream.workers", "stream_workers", integer(1, 100), 10, "JetStream publishers"),
    AdapterKey(
        "stream.servers", "stream_servers", server_list, (), "JetStream servers (default: middleware)"
    ),
    AdapterKey(
        "stream.ack_timeout", "stream_ack_timeout", duration(0.01, 300), 5.0, "wait for one ack", False
    ),
    AdapterKey(
        "stream.retry_budget",
        "stream_retry_budget",
        duration(0, 86400),
        60.0,
        "retry time per message",
        False,
    ),
    AdapterKey(
        "stream.max_pending", "stream_max_pending", integer(1, 65536), 512, "in flight per publisher", False
    ),
    AdapterKey(
        "stream.publish",
        "stream_publish",
        one_of("auto", "batched", "acked"),
        "auto",
        "batched (fast-ingest) or acked publishing; auto: batched when server and stream allow",
        False,
    ),
    AdapterKey(
        "shutdown_grace", "shutdown_grace", duration(0, 3600), 10.0, "time to confirm queue on stop", False
    ),
    AdapterKey("stream.name", "stream_name", stream_name, None, "stream name (default CHORIA_<NAME>)", False),
    AdapterKey("stream.subjects", "stream_subjects", subject_list, None, "stream subjects (derived)", False),
    AdapterKey(
        "stream.max_age", "stream_max_age", duration(0), 7 * 86400.0, "keep messages (0 = forever)", False
    ),
    AdapterKey("stream.storage", "stream_storage", one_of("file", "memory"), "file", "file or memory", False),
    AdapterKey("stream.replicas", "stream_replicas", integer(1, 5), 1, "stream replicas", False),
    AdapterKey(
        "stream.max_msgs_per_subject",
        "stream_max_msgs_per_subject",
        vol.All(integer(-1, 2**63 - 1), not_zero),
        -1,
        "messages kept per node subject (-1 = unlimited)",
        False,
    ),
    AdapterKey(
        "stream.duplicate_window",
        "stream_duplicate_window",
        duration(0.1),
        120.0,
        "de-duplication window",
        False,
    ),
)
ADAPTER_KEYS_BY_SUFFIX = {key.suffix: key for key in ADAPTER_KEYS}
DURATION_KEYS = frozenset(
    {
        "stream.ack_timeout",
        "stream.retry_budget",
        "shutdown_grace",
        "stream.max_age",
        "stream.duplicate_window",
        "plugin.choria.network.connect_timeout",
    }
)


def is_duration_key(key: str) -> bool:
    """Whether `key` (a full key or an adapter key suffix) holds a duration in seconds."""
    return any(key == name or key.endswith("." + name) for name in DURATION_KEYS)


KNOWN_SUFFIXES = ("type", "stream.type", *ADAPTER_KEYS_BY_SUFFIX)

ADAPTER_SCHEMA = vol.Schema(
    {vol.Optional(key.suffix): key.validate for key in ADAPTER_KEYS}, extra=vol.ALLOW_EXTRA
)


@dataclass(frozen=True, slots=True)
class AdapterSettings:
    name: str
    type: str
    queue_len: int
    ingest_topic: str
    ingest_protocol: str
    ingest_workers: int
    ingest_verify: str
    ingest_verify_ca: str | None
    stream_topic: str
    stream_workers: int
    stream_servers: tuple[str, ...]
    stream_ack_timeout: float
    stream_retry_budget: float
    stream_max_pending: int
    stream_publish: str
    shutdown_grace: float
    stream_name: str
    stream_subjects: tuple[str, ...]
    stream_max_age: float
    stream_storage: str
    stream_replicas: int
    stream_max_msgs_per_subject: int
    stream_duplicate_window: float
    # key suffix → "file:line", "default" or how it was derived
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def key(self, suffix: str) -> str:
        return f"{ADAPTER_PREFIX}{self.name}.{suffix}"

    def describe(self) -> list[tuple[str, Any, str]]:
        """(full key, value, where it came from) for every setting, for `check`."""
        rows: list[tuple[str, Any, str]] = [(self.key("type"), self.type, self.sources.get("type", DEFAULT))]
        for key in ADAPTER_KEYS:
            value = getattr(self, key.attribute)
            rows.append((self.key(key.suffix), value, self.sources.get(key.suffix, DEFAULT)))
        return rows


# ---------------------------------------------------------------------------------------------
# Process settings
# ---------------------------------------------------------------------------------------------

LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
SECURITY_PROVIDERS = ("puppet", "file", "choria")
SECRET_KEYS = frozenset({"plugin.nats.pass"})
ISSUER_NAMES_KEY = "plugin.security.issuer.names"


def issuer_public_key(name: str) -> str:
    return f"plugin.security.issuer.{name}.public"


SECRET_MASK = "********"


@dataclass(frozen=True, slots=True)
class Settings:
    config_file: str
    identity: str
    logfile: str
    loglevel: str
    middleware_hosts: tuple[str, ...]
    middleware_source: str
    security_provider: str
    certname: str
    ssldir: str
    file_certificate: str | None
    file_key: str | None
    file_ca: str | None
    choria_certificate: str | None
    choria_key: str | None
    choria_ca: str | None
    nats_user: str | None
    nats_password: str | None = field(repr=False)
    nats_credentials: str | None
    stats_address: str
    stats_port: int
    connect_timeout: float
    adapters: dict[str, AdapterSettings]
    # plugin.security.issuer.names → each issuer's hex ed25519 public key (v2 verification)
    issuers: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[Problem, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def protocol_version(self) -> int:
        """One security provider decodes one protocol version: x509 providers v1, choria v2."""
        return 2 if self.security_provider == "choria" else 1

    def tls_files(self) -> dict[str, tuple[str, str]]:
        """role → (path, the key that sets it) for the client certificate, key and CA."""
        if self.security_provider in {"file", "choria"}:
            # Both providers name the three files explicitly, each under its own key prefix.
            paths = {
                "file": (self.file_certificate, self.file_key, self.file_ca),
                "choria": (self.choria_certificate, self.choria_key, self.choria_ca),
            }[self.security_provider]
            return {
                role: (path or "", f"plugin.security.{self.security_provider}.{role}")
                for role, path in zip(("certificate", "key", "ca"), paths, strict=True)
            }
        if self.security_provider == "puppet":
            ssldir = Path(self.ssldir)
            return {
                "certificate": (str(ssldir / "certs" / f"{self.certname}.pem"), "plugin.choria.ssldir"),
                "key": (str(ssldir / "private_keys" / f"{self.certname}.pem"), "plugin.choria.ssldir"),
                "ca": (str(ssldir / "certs" / "ca.pem"), "plugin.choria.ssldir"),
            }
        return {}

    def verify_ca(self, adapter: AdapterSettings) -> tuple[str, str]:
        """(path, the key that sets it) of the CA bundle that verifies this adapter's v1 messages."""
        if adapter.ingest_verify_ca:
            return adapter.ingest_verify_ca, adapter.key("ingest.verify_ca")
        path, key = self.tls_files().get("ca", ("", "plugin.security.file.ca"))
        return path, key

    def describe(self) -> list[tuple[str, Any, str]]:
        rows = [
            ("identity", self.identity, self.sources.get("identity", DEFAULT)),
            ("logfile", self.logfile, self.sources.get("logfile", DEFAULT)),
            ("loglevel", self.loglevel, self.sources.get("loglevel", DEFAULT)),
            ("plugin.choria.middleware_hosts", ", ".join(self.middleware_hosts), self.middleware_source),
            (
                "plugin.security.provider",
                self.security_provider,
                self.sources.get("plugin.security.provider", DEFAULT),
            ),
            (
                "plugin.choria.stats_address",
                self.stats_address,
                self.sources.get("plugin.choria.stats_address", DEFAULT),
            ),
            (
                "plugin.choria.stats_port",
                self.stats_port,
                self.sources.get("plugin.choria.stats_port", DEFAULT),
            ),
            (
                "plugin.choria.network.connect_timeout",
                self.connect_timeout,
                self.sources.get("plugin.choria.network.connect_timeout", DEFAULT),
            ),
        ]
        if self.security_provider == "puppet":
            rows.append(
                ("plugin.choria.ssldir", self.ssldir, self.sources.get("plugin.choria.ssldir", DEFAULT))
            )
        for role, (path, key) in self.tls_files().items():
            if self.security_provider in {"file", "choria"}:
                rows.append((key, path, self.sources.get(key, DEFAULT)))
            else:
                rows.append((f"(tls {role})", path, "derived from plugin.choria.ssldir and identity"))
        if self.issuers:
            rows.append(
                (
                    ISSUER_NAMES_KEY,
                    ", ".join(self.issuers),
                    self.sources.get(ISSUER_NAMES_KEY, DEFAULT),
                )
            )
            for name, public in self.issuers.items():
                key = issuer_public_key(name)
                rows.append((key, public, self.sources.get(key, DEFAULT)))
        if self.nats_user:
            rows.append(("plugin.nats.user", self.nats_user, self.sources.get("plugin.nats.user", DEFAULT)))
        if self.nats_password:
            rows.append(("plugin.nats.pass", SECRET_MASK, self.sources.get("plugin.nats.pass", DEFAULT)))
        if self.nats_credentials:
            rows.append(
                (
                    "plugin.nats.credentials",
                    self.nats_credentials,
                    self.sources.get("plugin.nats.credentials", DEFAULT),
                )
            )
        return rows


class ConfigError(Exception):
    """The configuration is invalid; `issues` lists every problem, each with file, line and key."""

    def __init__(
        self, config_file: str, issues: list[Problem], warnings: list[Problem] | None = None
    ) -> None:
        self.config_file = config_file
        self.issues = issues
        self.warnings = warnings or []
        count = len(issues)
        lines = [f"{config_file}: {count} configuration error{'s' if count != 1 else ''}:"]
        lines += [f"  {issue}" for issue in issues]
        super().__init__("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------


class _Builder:
    """Collects values, provenance, errors and warnings while reading one RawConfig."""

    def __init__(self, raw: RawConfig, config_file: str, environ: Mapping[str, str]) -> None:
        self.raw = raw
        self.config_file = config_file
        self.environ = environ
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = list(raw.warnings)
        self.sources: dict[str, str] = {}

    def file_source(self) -> Source:
        return Source(self.config_file, 0)

    def error(self, message: str, key: str, option: RawOption | None = None) -> None:
        self.errors.append(Problem(message, option.source if option else self.file_source(), key))

    def warn(self, message: str, key: str | None, option: RawOption | None = None) -> None:
        self.warnings.append(Problem(message, option.source if option else self.file_source(), key))

    def value(self, key: str, validate: Callable[[Any], Any], default: Any, env: str | None = None) -> Any:
        option = self.raw.get(key)
        if option is None:
            self.sources[key] = DEFAULT
            return default
        text = option.value
        if env and self.environ.get(env):
            # As the Go broker does, the variable wins, but only when the key is in a file.
            text = self.environ[env]
            self.sources[key] = f"environment {env} (key at {option.source})"
        else:
            self.sources[key] = str(option.source)
        try:
            return validate(text)
        except vol.Invalid as invalid:
            self.error(invalid.msg, key, option)
            return default


def build_settings(
    raw: RawConfig,
    *,
    config_file: str,
    environ: Mapping[str, str] | None = None,
    default_identity: str = "",
    default_ssldir: str = "/etc/puppetlabs/puppet/ssl",
) -> Settings:
    """Validate raw options into Settings, or raise ConfigError listing every problem. Pure."""
    env = dict(environ or {})
    build = _Builder(raw, config_file, env)

    identity = build.value("identity", str, default_identity)
    if not identity:
        build.error("cannot determine the identity from the host name; set identity = <fqdn>", "identity")
    logfile = build.value("logfile", str, "stdout")
    loglevel = build.value("loglevel", one_of(*LOG_LEVELS), "info")
    provider = build.value("plugin.security.provider", _security_provider, "puppet")
    middleware, middleware_source = _middleware(build)

    adapters = _adapters(build)
    stats_port = build.value("plugin.choria.stats_port", integer(0, 65535), 0)
    settings = Settings(
        config_file=config_file,
        identity=identity,
        logfile=logfile,
        loglevel=loglevel,
        middleware_hosts=middleware,
        middleware_source=middleware_source,
        security_provider=provider,
        certname=env.get("MCOLLECTIVE_CERTNAME") or identity,
        ssldir=build.value("plugin.choria.ssldir", str, default_ssldir),
        file_certificate=build.value("plugin.security.file.certificate", str, None),
        file_key=build.value("plugin.security.file.key", str, None),
        file_ca=build.value("plugin.security.file.ca", str, None),
        choria_certificate=build.value("plugin.security.choria.certificate", str, None),
        choria_key=build.value("plugin.security.choria.key", str, None),
        choria_ca=build.value("plugin.security.choria.ca", str, None),
        nats_user=build.value("plugin.nats.user", str, None, env="MCOLLECTIVE_NATS_USERNAME"),
        nats_password=build.value("plugin.nats.pass", str, None, env="MCOLLECTIVE_NATS_PASSWORD"),
        nats_credentials=build.value(
            "plugin.nats.credentials", str, None, env="MCOLLECTIVE_NATS_CREDENTIALS"
        ),
        stats_address=build.value("plugin.choria.stats_address", str, "127.0.0.1"),
        stats_port=stats_port,
        connect_timeout=build.value("plugin.choria.network.connect_timeout", duration(0.001, 120), 2.0),
        adapters=adapters,
        issuers=_issuers(build),
        warnings=tuple(build.warnings),
        sources=build.sources,
    )
    if settings.security_provider == "file":
        for role, (path, key) in settings.tls_files().items():
            if not path:
                build.error(f"the file security provider needs the TLS {role}: set {key} = <path>", key)
    _check_verification(build, settings)
    if (settings.nats_user is None) != (settings.nats_password is None):
        missing = "plugin.nats.pass" if settings.nats_password is None else "plugin.nats.user"
        build.warn(
            f"user/password authentication needs both plugin.nats.user and plugin.nats.pass; set {missing}",
            missing,
        )
        settings = _replace_warnings(settings, build.warnings)
    if build.errors:
        raise ConfigError(config_file, build.errors, build.warnings)
    return settings


def _issuers(build: _Builder) -> dict[str, str]:
    """plugin.security.issuer.names and each named issuer's .public key, validated."""
    option = build.raw.get(ISSUER_NAMES_KEY)
    if option is None:
        build.sources[ISSUER_NAMES_KEY] = DEFAULT
        return {}
    build.sources[ISSUER_NAMES_KEY] = str(option.source)
    issuers: dict[str, str] = {}
    for name in (item.strip() for item in option.value.split(",")):
        if not ADAPTER_NAME.fullmatch(name):
            build.error(
                f"issuer name {name!r} is not allowed; expected letters, digits, '_' and '-' only",
                ISSUER_NAMES_KEY,
                option,
            )
            continue
        key = issuer_public_key(name)
        public = build.raw.get(key)
        if public is None:
            build.error(
                f"issuer {name!r} is listed in {ISSUER_NAMES_KEY} but has no public key; "
                f"set {key} = <hex ed25519 public key>",
                key,
                option,
            )
            continue
        build.sources[key] = str(public.source)
        try:
            parse_issuers({name: public.value})
        except TrustError as error:
            build.error(error.reason, key, public)
            continue
        issuers[name] = public.value.strip().lower()
    return issuers


def _check_verification(build: _Builder, settings: Settings) -> None:
    """Verification needs trust material the provider can use (its files are checked by
    verify_problems, at the edge)."""
    for adapter in settings.adapters.values():
        if adapter.ingest_verify == OFF:
            continue
        option = build.raw.get(adapter.key("ingest.verify"))
        if settings.protocol_version == 2 and not settings.issuers:
            build.error(
                f"ingest.verify = {adapter.ingest_verify} with the choria security provider needs "
                f"trusted issuers; set {ISSUER_NAMES_KEY} = NAME and "
                f"{issuer_public_key('NAME')} = <hex ed25519 public key>",
                ISSUER_NAMES_KEY,
                option,
            )
        if settings.protocol_version == 2 and adapter.ingest_verify_ca:
            build.warn(
                "the choria security provider decodes version 2 messages, verified with issuers: "
                "ingest.verify_ca is not used",
                adapter.key("ingest.verify_ca"),
                build.raw.get(adapter.key("ingest.verify_ca")),
            )


def _ca_trust(settings: Settings, adapter: AdapterSettings) -> tuple[Trust | None, str, str]:
    """(the trust, or None with why not, and the key that names the CA bundle)."""
    path, key = settings.verify_ca(adapter)
    if not path:
        return None, f"no CA bundle for ingest.verify; set {adapter.key('ingest.verify_ca')} = <file>", key
    try:
        return Trust(ca=load_ca_bundle(path)), "", key
    except TrustError as error:
        return None, f"CA bundle for {adapter.key('ingest.verify')}: {error.reason}", key


def load_trust(settings: Settings, adapter: AdapterSettings) -> Trust:
    """The trust material one verifying adapter checks messages against (reads the CA bundle).
    Raises TrustError naming the key."""
    if settings.protocol_version == 2:
        return Trust(issuers=parse_issuers(settings.issuers))
    trust, problem, key = _ca_trust(settings, adapter)
    if trust is None:
        raise TrustError(f"{key}: {problem}")
    return trust


def verify_problems(settings: Settings) -> list[Problem]:
    """Trust material that verifying adapters cannot load (I/O: reads the CA bundles)."""
    problems = []
    for adapter in settings.adapters.values():
        if adapter.ingest_verify == OFF or settings.protocol_version == 2:
            continue
        trust, problem, key = _ca_trust(settings, adapter)
        if trust is None:
            if key.startswith(ADAPTER_PREFIX):
                source = adapter.sources.get("ingest.verify_ca")
            else:
                source = settings.sources.get(key)
            problems.append(Problem(problem, _source_from_text(settings.config_file, source), key))
    return problems


def _source_from_text(config_file: str, text: str | None) -> Source:
    """A Source from its "file:line" text (as kept in `sources`), else the file itself."""
    if text and ":" in text:
        path, _, line = text.rpartition(":")
        if line.isdigit():
            return Source(path, int(line))
    return Source(config_file, 0)


def _replace_warnings(settings: Settings, warnings: list[Problem]) -> Settings:
    from dataclasses import replace

    return replace(settings, warnings=tuple(warnings))


def _security_provider(value: Any) -> str:
    if value in {"pkcs11", "certmanager"}:
        raise vol.Invalid(
            f"{value!r} is a Go broker provider this runtime does not support; expected one of "
            f"{', '.join(SECURITY_PROVIDERS)}"
        )
    return one_of(*SECURITY_PROVIDERS)(value)


def _middleware(build: _Builder) -> tuple[tuple[str, ...], str]:
    """The Choria network servers, in the Go broker's resolution order (config/SPEC.md 5.3)."""
    raw = build.raw
    collectives = raw.get("plugin.choria.federation.collectives")
    if collectives or build.environ.get("CHORIA_FED_COLLECTIVE"):
        key = "plugin.choria.federation_middleware_hosts"
        option = raw.get(key)
        if option is None:
            build.error(
                "federation is configured but SRV lookup is not supported here; set "
                "plugin.choria.federation_middleware_hosts = host:port[, host:port]",
                key,
                collectives,
            )
            return (), DEFAULT
        return build.value(key, server_list, ()), str(option.source)

    option = raw.get("plugin.choria.middleware_hosts")
    if option is not None:
        return build.value("plugin.choria.middleware_hosts", server_list, ()), str(option.source)

    network = raw.get("plugin.choria.broker_network")
    if network is not None and build.value("plugin.choria.broker_network", boolean, False):
        address = raw.value("plugin.choria.network.listen_address") or "::"
        if address in {"::", "0.0.0.0", ""}:
            address = "127.0.0.1"
        elif ":" in address:
            address = f"[{address}]"
        port = build.value("plugin.choria.network.client_port", integer(1, 65535), 4222)
        return (
            f"nats://{address}:{port}",
        ), f"local network broker (plugin.choria.broker_network at {network.source})"

    build.warn(
        "no plugin.choria.middleware_hosts set; SRV discovery is not supported by this runtime, so the Go "
        "fallback puppet:4222 is used. Set plugin.choria.middleware_hosts = host:port",
        "plugin.choria.middleware_hosts",
    )
    return ("nats://puppet:4222",), "default (Go fallback puppet:4222)"


def _adapters(build: _Builder) -> dict[str, AdapterSettings]:
    raw = build.raw
    listing = raw.get(ADAPTERS_KEY)
    names: list[str] = []
    if listing is None:
        build.error(f"no adapters configured; set {ADAPTERS_KEY} = NAME[,NAME...]", ADAPTERS_KEY)
    else:
        for name in (item.strip() for item in listing.value.split(",")):
            if not name:
                build.error(
                    f"{listing.value!r} has an empty adapter name (a stray comma?)", ADAPTERS_KEY, listing
                )
            elif not ADAPTER_NAME.fullmatch(name):
                build.error(
                    f"adapter name {name!r} is not allowed; expected letters, digits, '_' and '-' only",
                    ADAPTERS_KEY,
                    listing,
                )
            elif name in names:
                build.error(f"adapter {name!r} is named twice", ADAPTERS_KEY, listing)
            else:
                names.append(name)

    configured = {
        key[len(ADAPTER_PREFIX) :].split(".", 1)[0] for key in raw.options if key.startswith(ADAPTER_PREFIX)
    }
    for stray in sorted(configured - set(names)):
        option = next(o for k, o in raw.options.items() if k.startswith(f"{ADAPTER_PREFIX}{stray}."))
        hint = f" (add it to {ADAPTERS_KEY})" if listing is not None else ""
        build.warn(
            f"settings for adapter {stray!r}, which {ADAPTERS_KEY} does not list, are ignored{hint}",
            option.key,
            option,
        )

    return {name: adapter for name in names if (adapter := _adapter(build, name, listing)) is not None}


def _adapter(build: _Builder, name: str, listing: RawOption | None) -> AdapterSettings | None:
    prefix = f"{ADAPTER_PREFIX}{name}."
    options = {
        key[len(prefix) :]: option for key, option in build.raw.options.items() if key.startswith(prefix)
    }
    sources: dict[str, str] = {}
    errors_before = len(build.errors)

    adapter_type = _adapter_type(build, name, options, listing, sources)

    for suffix, option in options.items():
        if suffix not in KNOWN_SUFFIXES:
            hint = _did_you_mean(suffix, KNOWN_SUFFIXES, prefix=prefix)
            build.warn(f"unknown adapter key, ignored{hint}", option.key, option)

    try:
        values = ADAPTER_SCHEMA({suffix: option.value for suffix, option in options.items()})
    except vol.MultipleInvalid as invalid:
        values = {}
        for error in invalid.errors:
            suffix = str(error.path[0]) if error.path else ""
            option = options.get(suffix)
            build.error(error.msg, f"{prefix}{suffix}", option)

    typed: dict[str, Any] = {}
    for key in ADAPTER_KEYS:
        if key.suffix in options:
            sources[key.suffix] = str(options[key.suffix].source)
            typed[key.attribute] = values.get(key.suffix, key.default)
        else:
            sources[key.suffix] = DEFAULT
            typed[key.attribute] = key.default

    if "ingest.topic" not in options:
        build.error(
            f"adapter {name!r} has no ingest topic; set {prefix}ingest.topic = <subject>",
            f"{prefix}ingest.topic",
            listing,
        )
    if typed["stream_topic"] is None:
        typed["stream_topic"] = name
    if typed["stream_name"] is None:
        typed["stream_name"] = derive_stream_name(name)
    if typed["stream_subjects"] is None:
        problem = subjects_problem(typed["stream_topic"])
        if problem:
            build.error(
                f"{problem} (as {prefix}stream.subjects = <subject>[, <subject>])",
                f"{prefix}stream.subjects",
                options.get("stream.topic"),
            )
        derived = () if problem else derive_subjects(typed["stream_topic"])
        typed["stream_subjects"] = derived
        sources["stream.subjects"] = "derived from stream.topic"
    if "stream.name" not in options:
        sources["stream.name"] = "derived from the adapter name"
    if "stream.topic" not in options:
        sources["stream.topic"] = "default (the adapter name)"
    if "ingest.verify_ca" not in options:
        sources["ingest.verify_ca"] = "default (the security provider's CA)"
    horizon = typed["stream_retry_budget"] + typed["stream_ack_timeout"]
    if typed["stream_duplicate_window"] < horizon:
        build.warn(
            f"stream.duplicate_window ({format_duration(typed['stream_duplicate_window'])}) "
            "is shorter than the retry horizon stream.retry_budget + stream.ack_timeout "
            f"({format_duration(horizon)}): a late retry "
            "could be stored twice",
            f"{prefix}stream.duplicate_window",
            options.get("stream.duplicate_window") or options.get("stream.retry_budget"),
        )
    if len(build.errors) > errors_before or adapter_type is None:
        return None
    return AdapterSettings(name=name, type=adapter_type, sources=sources, **typed)


def _adapter_type(
    build: _Builder,
    name: str,
    options: Mapping[str, RawOption],
    listing: RawOption | None,
    sources: dict[str, str],
) -> str | None:
    prefix = f"{ADAPTER_PREFIX}{name}."
    top, nested = options.get("type"), options.get("stream.type")
    chosen = top
    if nested is not None:
        if top is not None and top.value != nested.value:
            build.error(
                f"{nested.value!r} disagrees with {prefix}type = {top.value} ({top.source}); "
                f"remove {prefix}stream.type",
                f"{prefix}stream.type",
                nested,
            )
            return None
        if top is None:
            build.warn(
                f"the Choria docs put type inside stream, but the Go broker only reads {prefix}type; "
                f"accepted here, write {prefix}type = {nested.value} instead",
                f"{prefix}stream.type",
                nested,
            )
            chosen = nested
        else:
            build.warn(
                f"redundant: {prefix}type already says {top.value}; remove this line",
                f"{prefix}stream.type",
                nested,
            )
    if chosen is None:
        build.error(
            f"adapter {name!r} has no type; set {prefix}type = choria_streams (or its alias jetstream)",
            f"{prefix}type",
            listing,
        )
        return None
    sources["type"] = str(chosen.source)
    if chosen.value in RETIRED_TYPES:
        build.error(f"type {chosen.value!r}: {RETIRED_TYPES[chosen.value]}", chosen.key, chosen)
        return None
    if chosen.value not in ADAPTER_TYPES:
        hint = _did_you_mean(chosen.value, known_type_names())
        build.error(
            f"unknown adapter type {chosen.value!r}; expected one of {', '.join(known_type_names())}{hint}",
            chosen.key,
            chosen,
        )
        return None
    return chosen.value


def _did_you_mean(word: str, choices: Any, *, prefix: str = "") -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


# ---------------------------------------------------------------------------------------------
# The edge: read files, ask the host
# ---------------------------------------------------------------------------------------------


def default_identity() -> str:
    """The host's FQDN, as the Go broker derives it when `identity` is unset."""
    hostname = socket.gethostname()
    if hostname.count(".") >= 2:
        return hostname
    fqdn = socket.getfqdn()
    if fqdn and fqdn != "localhost":
        return fqdn
    return hostname


def default_ssldir() -> str:
    if os.geteuid() == 0:
        return "/etc/puppetlabs/puppet/ssl"
    return str(Path.home() / ".puppetlabs" / "etc" / "puppet" / "ssl")


def load_settings(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a broker.conf (and its plugin.d). Raises ConfigError for every problem."""
    config_file = str(Path(path).absolute())
    try:
        raw = read_config(path)
    except OSError as error:
        raise ConfigError(
            config_file,
            [Problem(f"cannot read the configuration file: {error.strerror}", Source(config_file, 0))],
        ) from None
    return build_settings(
        raw,
        config_file=config_file,
        environ=os.environ if environ is None else environ,
        default_identity=default_identity() if raw.get("identity") is None else "",
        default_ssldir=default_ssldir(),
    )


def tls_problems(settings: Settings) -> list[Problem]:
    """Missing TLS files for the configured security provider (I/O: looks at the file system)."""
    problems = []
    for role, (path, key) in settings.tls_files().items():
        # The choria provider's files are needed only for TLS, so a protocol v2 set-up run with
        # --disable-tls may leave them out; the file provider's are required outright.
        if not path and settings.security_provider == "choria":
            problems.append(
                Problem(
                    f"the choria security provider needs the TLS {role}: set {key} = <path> "
                    "(needed unless --disable-tls)",
                    Source(settings.config_file, 0),
                    key,
                )
            )
        elif path and not Path(path).is_file():
            problems.append(
                Problem(
                    f"TLS {role} {path} does not exist (needed unless --disable-tls)",
                    Source(settings.config_file, 0),
                    key,
                )
            )
    return problems
