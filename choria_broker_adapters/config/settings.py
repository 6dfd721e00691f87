"""Typed, validated settings from raw broker.conf options.

Raw options (brokerconf) → one `Settings` for the process and one `AdapterSettings` per
adapter named in `plugin.choria.adapters`, with the Go broker's defaults. Each value keeps
its provenance (file:line, "default" or an environment variable) for `check`.

Unlike the Go broker, which stops at the first problem or ignores it, every problem is
collected and reported at once, each naming file, line, key, the bad value and what is
expected. Pure: the only I/O is in `load_settings`, at the edge.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from choria_broker_adapters.codec.verify import (
    OFF,
    TrustError,
    parse_issuers,
)
from choria_broker_adapters.config.brokerconf import Problem, RawConfig, RawOption, Source, read_config
from choria_broker_adapters.config.builder import DEFAULT, Builder, ConfigError
from choria_broker_adapters.config.keys import (
    ADAPTER_KEYS,
    ADAPTER_PREFIX,
    ADAPTERS_KEY,
    KNOWN_SUFFIXES,
    PROCESS_KEYS,
)
from choria_broker_adapters.config.validators import did_you_mean, validate_each
from choria_broker_adapters.core.adapter_types import ADAPTER_TYPES, RETIRED_TYPES, type_names
from choria_broker_adapters.core.choices import protocol_version_for
from choria_broker_adapters.core.durations import format_duration
from choria_broker_adapters.core.names import ADAPTER_NAME, ADAPTER_NAME_EXPECTED, derive_stream_name
from choria_broker_adapters.core.servers import ServerList
from choria_broker_adapters.core.subjects import derivation_problem, derive_subjects

SECRET_MASK = "********"
ISSUER_NAMES_KEY = "plugin.security.issuer.names"


def issuer_public_key(name: str) -> str:
    return f"plugin.security.issuer.{name}.public"


_ADAPTER_SCHEMA = {key.suffix: key.validate for key in ADAPTER_KEYS}


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
    stream_servers: ServerList  # as configured; empty: the middleware servers
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
    # Where the stream workers publish: stream.servers, else the middleware servers.
    publish_servers: ServerList = field(default_factory=ServerList)
    # key suffix → "file:line", "default" or how it was derived
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def key(self, suffix: str) -> str:
        return f"{ADAPTER_PREFIX}{self.name}.{suffix}"

    @property
    def publishes_via_middleware(self) -> bool:
        return not self.stream_servers

    def describe(self) -> list[tuple[str, Any, str]]:
        """(full key, value, where it came from) for every setting, for `check`."""
        rows: list[tuple[str, Any, str]] = [(self.key("type"), self.type, self.sources.get("type", DEFAULT))]
        for key in ADAPTER_KEYS:
            value = getattr(self, key.attribute)
            rows.append((self.key(key.suffix), value, self.sources.get(key.suffix, DEFAULT)))
        return rows


@dataclass(frozen=True, slots=True)
class Settings:
    config_file: str
    identity: str
    logfile: str
    loglevel: str
    middleware_hosts: ServerList
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
        return protocol_version_for(self.security_provider)

    def verify_ca(self, adapter: AdapterSettings) -> tuple[str, str]:
        """(path, the key that sets it) of the CA bundle that verifies this adapter's v1 messages."""
        if adapter.ingest_verify_ca:
            return adapter.ingest_verify_ca, adapter.key("ingest.verify_ca")
        path, key = self.tls_files().get("ca", ("", "plugin.security.file.ca"))
        return path, key

    def tls_files(self) -> dict[str, tuple[str, str]]:
        """role → (path, the key that sets it) for the client certificate, key and CA: the one
        place the providers' file layouts are known (`connect` and `check` read it). The file
        (protocol v1) and choria (protocol v2) providers name their three files explicitly."""
        if self.security_provider in {"file", "choria"}:
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

    def describe(self) -> list[tuple[str, Any, str]]:
        """(key, value, where it came from) for `check`, from the key table; secrets masked."""
        rows: list[tuple[str, Any, str]] = []
        for key in PROCESS_KEYS:
            value = getattr(self, key.attribute)
            source = self.sources.get(key.key, DEFAULT)
            if key.key == "plugin.security.provider":
                rows.append(
                    (
                        "plugin.choria.middleware_hosts",
                        ", ".join(self.middleware_hosts),
                        self.middleware_source,
                    )
                )
            if key.key == "plugin.choria.ssldir":
                if self.security_provider == "puppet":
                    rows.append((key.key, value, source))
                    rows += [
                        (f"(tls {role})", path, "derived from plugin.choria.ssldir and identity")
                        for role, (path, _key) in self.tls_files().items()
                    ]
                continue
            provider_files = key.key.startswith(("plugin.security.file.", "plugin.security.choria."))
            if provider_files:
                if key.key.startswith(f"plugin.security.{self.security_provider}."):
                    rows.append((key.key, value or "", source))
                continue
            if key.key == "plugin.nats.user" and self.issuers:
                rows.append(
                    (ISSUER_NAMES_KEY, ", ".join(self.issuers), self.sources.get(ISSUER_NAMES_KEY, DEFAULT))
                )
                rows += [
                    (issuer_public_key(name), public, self.sources.get(issuer_public_key(name), DEFAULT))
                    for name, public in self.issuers.items()
                ]
            if key.default is None and value is None and key.key != "identity":
                continue  # optional and unset
            rows.append((key.key, SECRET_MASK if key.secret else value, source))
        return rows


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
    build = Builder(raw, config_file, env)
    values = build.process_values()
    typed = {key.attribute: values.get(key.key, key.default) for key in PROCESS_KEYS}
    if not typed["identity"]:
        typed["identity"] = default_identity
    if not typed["identity"]:
        build.error("cannot determine the identity from the host name; set identity = <fqdn>", "identity")
    if typed["ssldir"] is None:
        typed["ssldir"] = default_ssldir
    middleware, middleware_source = _middleware(build, values)
    settings = Settings(
        config_file=config_file,
        middleware_hosts=middleware,
        middleware_source=middleware_source,
        certname=env.get("MCOLLECTIVE_CERTNAME") or typed["identity"],
        adapters=_adapters(build, middleware),
        issuers=_issuers(build),
        warnings=(),
        sources=build.sources,
        **typed,
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
    if build.errors:
        raise ConfigError(config_file, build.errors, build.warnings)
    return replace(settings, warnings=tuple(build.warnings))


def _issuers(build: Builder) -> dict[str, str]:
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
                f"issuer name {name!r} is not allowed; expected {ADAPTER_NAME_EXPECTED}",
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


def _check_verification(build: Builder, settings: Settings) -> None:
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


def _middleware(build: Builder, values: Mapping[str, Any]) -> tuple[ServerList, str]:
    """The Choria network servers, in the Go broker's resolution order (docs/configuration.md)."""
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
            return ServerList(), DEFAULT
        return values.get(key, ServerList()), str(option.source)

    option = raw.get("plugin.choria.middleware_hosts")
    if option is not None:
        return values.get("plugin.choria.middleware_hosts", ServerList()), str(option.source)

    network = raw.get("plugin.choria.broker_network")
    if network is not None and values.get("plugin.choria.broker_network", False):
        address = raw.value("plugin.choria.network.listen_address") or "::"
        if address in {"::", "0.0.0.0", ""}:
            address = "127.0.0.1"
        elif ":" in address:
            address = f"[{address}]"
        port = values.get("plugin.choria.network.client_port", 4222)
        return (
            ServerList([f"nats://{address}:{port}"]),
            f"local network broker (plugin.choria.broker_network at {network.source})",
        )

    build.warn(
        "no plugin.choria.middleware_hosts set; SRV discovery is not supported by this runtime, so the Go "
        "fallback puppet:4222 is used. Set plugin.choria.middleware_hosts = host:port",
        "plugin.choria.middleware_hosts",
    )
    return ServerList(["nats://puppet:4222"]), "default (Go fallback puppet:4222)"


def _adapters(build: Builder, middleware: ServerList) -> dict[str, AdapterSettings]:
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
                    f"adapter name {name!r} is not allowed; expected {ADAPTER_NAME_EXPECTED}",
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

    adapters = (_adapter(build, name, listing, middleware) for name in names)
    return {adapter.name: adapter for adapter in adapters if adapter is not None}


def _adapter(
    build: Builder, name: str, listing: RawOption | None, middleware: ServerList
) -> AdapterSettings | None:
    prefix = f"{ADAPTER_PREFIX}{name}."
    options = {
        key[len(prefix) :]: option for key, option in build.raw.options.items() if key.startswith(prefix)
    }
    sources: dict[str, str] = {}
    errors_before = len(build.errors)

    adapter_type = _adapter_type(build, name, options, listing, sources)

    for suffix, option in options.items():
        if suffix not in KNOWN_SUFFIXES:
            hint = did_you_mean(suffix, KNOWN_SUFFIXES, prefix=prefix)
            build.warn(f"unknown adapter key, ignored{hint}", option.key, option)

    values, errors = validate_each(
        _ADAPTER_SCHEMA, {suffix: option.value for suffix, option in options.items()}
    )
    build.invalid(errors, options, prefix)

    typed: dict[str, Any] = {}
    for key in ADAPTER_KEYS:
        if key.suffix in options:
            sources[key.suffix] = str(options[key.suffix].source)
        else:
            sources[key.suffix] = DEFAULT
        typed[key.attribute] = values.get(key.suffix, key.default)

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
        problem = derivation_problem(typed["stream_topic"])
        if problem:
            build.error(
                f"{problem} (as {prefix}stream.subjects = <subject>[, <subject>])",
                f"{prefix}stream.subjects",
                options.get("stream.topic"),
            )
        typed["stream_subjects"] = () if problem else derive_subjects(typed["stream_topic"])
        sources["stream.subjects"] = "derived from stream.topic"
    if "stream.name" not in options:
        sources["stream.name"] = "derived from the adapter name"
    if "stream.topic" not in options:
        sources["stream.topic"] = "default (the adapter name)"
    if "ingest.verify_ca" not in options:
        sources["ingest.verify_ca"] = "default (the security provider's CA)"
    typed["stream_servers"] = ServerList(
        typed["stream_servers"], getattr(typed["stream_servers"], "userinfo", None)
    )
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
    return AdapterSettings(
        name=name,
        type=adapter_type,
        sources=sources,
        publish_servers=typed["stream_servers"] or middleware,
        **typed,
    )


def _adapter_type(
    build: Builder,
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
        hint = did_you_mean(chosen.value, type_names())
        build.error(
            f"unknown adapter type {chosen.value!r}; expected one of {', '.join(type_names())}{hint}",
            chosen.key,
            chosen,
        )
        return None
    return chosen.value


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
