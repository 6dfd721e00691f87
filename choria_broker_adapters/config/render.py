"""Hiera-style data → broker.conf text: the same bytes Puppet's `choria::broker` writes.

Operators without Puppet keep the same data (`choria::broker::adapters`, `choria::broker::identity`,
...) in a YAML file and run `choria-broker-adapters render`. Every check here mirrors a type under
`puppet/types/` (or a check in `puppet/manifests/broker.pp`), and `templates/broker.cfg.j2` mirrors
`puppet/templates/broker.cfg.epp`: tests render the same data sets through real `puppet apply` and
through this module and compare the bytes.

Pure: no I/O besides reading the packaged template.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2

PREFIX = "choria::broker::"

# The module defaults, as in puppet/data/common.yaml (a test keeps them equal). `identity` is the
# exception: Puppet defaults it to the node's certname, which a plain YAML file does not have, so
# here it is left out unless given and the runtime derives it from the host name.
MODULE_DEFAULTS: Mapping[str, Any] = {
    "ensure": "present",
    "config_file": "/etc/choria/broker.conf",
    "identity": None,
    "log_file": "stdout",
    "log_level": "info",
    "stats_address": "127.0.0.1",
    "stats_port": 8223,
    "middleware_hosts": [],
    "security_provider": "puppet",
    "ssldir": None,
    "file_certificate": None,
    "file_key": None,
    "file_ca": None,
    "issuers": {},
    "choria_certificate": None,
    "choria_key": None,
    "choria_ca": None,
    "adapters": {},
    "manage_package": True,
    "install_dir": "/opt/choria-broker-adapters",
    "package_ensure": "present",
    "package_source": None,
    "python": "/usr/bin/python3",
    "python_packages": ["python3-venv"],
    "manage_service": True,
    "service_name": "choria-broker-adapters",
    "service_user": "root",
    "service_group": "root",
    "pid_file": None,
    "limit_nofile": None,
    "executable": None,
    "config_owner": "root",
    "config_group": "root",
}


class RenderError(ValueError):
    """Invalid data; `key` is the hiera key with the path inside it, e.g.
    `choria::broker::adapters.node_data.stream.workers`."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


# ---------------------------------------------------------------------------------------------
# Checks mirroring the Puppet types. Each takes (value, key) and raises RenderError naming the key.
# Regular expressions are the ones in puppet/types/*.pp; re.ASCII makes \s and \S mean what they
# mean in Ruby ([ \t\n\v\f\r]), and fullmatch stands for Ruby's \A...\z.
# ---------------------------------------------------------------------------------------------

Check = Callable[[Any, str], None]


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (undef)"
    if isinstance(value, bool):
        return f"Boolean {value!r}".replace("True", "true").replace("False", "false")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a Hash"
    if isinstance(value, list):
        return "an Array"
    return type(value).__name__


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(low: int, high: int | None = None) -> Check:
    name = f"Integer[{low}, {high}]" if high is not None else f"Integer[{low}]"

    def check(value: Any, key: str) -> None:
        if not _is_integer(value):
            hint = ""
            if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value):
                hint = " (a quoted number: write it without quotes)"
            raise RenderError(key, f"expects an {name} value, got {_describe(value)}{hint}")
        if value < low or (high is not None and value > high):
            raise RenderError(key, f"expects an {name} value, got {value}")

    return check


def pattern(type_name: str, regex: str, meaning: str) -> Check:
    compiled = re.compile(regex, re.ASCII)

    def check(value: Any, key: str) -> None:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise RenderError(key, f"expects a match for {type_name} ({meaning}), got {_describe(value)}")

    return check


def enum(*values: str) -> Check:
    def check(value: Any, key: str) -> None:
        if not isinstance(value, str) or value not in values:
            choices = ", ".join(repr(v) for v in values)
            raise RenderError(key, f"expects one of {choices}, got {_describe(value)}")

    return check


def boolean(value: Any, key: str) -> None:
    if not isinstance(value, bool):
        raise RenderError(key, f"expects a Boolean value (true or false), got {_describe(value)}")


def variant(description: str, *checks: Check) -> Check:
    def check(value: Any, key: str) -> None:
        for alternative in checks:
            try:
                alternative(value, key)
            except RenderError:
                continue
            return
        raise RenderError(key, f"expects {description}, got {_describe(value)}")

    return check


def array(item: Check, min_size: int = 0) -> Check:
    def check(value: Any, key: str) -> None:
        if not isinstance(value, list):
            raise RenderError(key, f"expects an Array, got {_describe(value)}")
        if len(value) < min_size:
            raise RenderError(key, f"expects at least {min_size} element(s), got an empty Array")
        for index, element in enumerate(value):
            item(element, f"{key}[{index}]")

    return check


@dataclass(frozen=True)
class Field:
    check: Check
    required: bool = False


def struct(fields: Mapping[str, Field]) -> Check:
    def check(value: Any, key: str) -> None:
        if not isinstance(value, Mapping):
            raise RenderError(key, f"expects a Hash, got {_describe(value)}")
        for name in value:
            if name not in fields:
                known = ", ".join(fields)
                raise RenderError(f"{key}.{name}", f"unrecognized key (known keys: {known})")
        for name, spec in fields.items():
            # As in Puppet, an optional key may be left out but not given as undef (YAML ~).
            if name not in value:
                if spec.required:
                    raise RenderError(f"{key}.{name}", "expects a value")
                continue
            spec.check(value[name], f"{key}.{name}")

    return check


SINGLE_LINE = pattern(
    "Choria::SingleLine", r"\S(?:[^\r\n]*\S)?", "one line without leading or trailing whitespace"
)
PATH = pattern("Choria::Path", r"/[^\s%]*", "an absolute path without whitespace or %")
SUBJECT = pattern("Choria::Subject", r"\S+", "a NATS subject without whitespace")
NAME = pattern("Choria::Name", r"[A-Za-z0-9_-]+", "letters, digits, _ and -")
STREAM_NAME = pattern("Choria::StreamName", r"[A-Za-z0-9_-]+", "letters, digits, _ and -")
SERVER = pattern(
    "Choria::Server",
    r"(?:(?:nats|tls)://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)"
    r":(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])",
    "host:port, nats://host:port or tls://host:port",
)
DURATION = variant(
    "a Choria::Duration: whole seconds as an Integer, or a string such as '30s', '1h30m', '1w'",
    integer(0),
    pattern(
        "Choria::Duration",
        r"(?:(?:[0-9]+(?:\.[0-9]+)?(?:ns|us|ms|s|m|h))+|[0-9]+(?:\.[0-9]+)?[wWdDMYy])",
        "a duration with a unit",
    ),
)
ADAPTER_TYPE = enum("jetstream", "choria_streams")
ISSUER_KEY = pattern("Choria::IssuerKey", r"[0-9A-Fa-f]{64}", "an ed25519 public key as 64 hex digits")
PACKAGE_VERSION_REGEX = r"[0-9]+(?:\.[0-9]+)*(?:(?:a|b|rc)[0-9]+)?(?:\.post[0-9]+)?(?:\.dev[0-9]+)?"
PACKAGE_VERSION = pattern("Choria::PackageVersion", PACKAGE_VERSION_REGEX, "a normalised PEP 440 version")
INDEX_URL = pattern("Choria::IndexUrl", r"https?://[^\s%]+", "an http or https URL")
OS_PACKAGE = pattern("Choria::OsPackage", r"[A-Za-z0-9][A-Za-z0-9.+_-]*", "a package name")
LOG_FILE = variant(
    "'stdout', 'stderr', 'discard' or an absolute path", enum("stdout", "stderr", "discard"), PATH
)

# The adapter keys by section, as in puppet/types/adapter*.pp; tests/test_puppet_keys.py checks
# that these and the Puppet types know every key of the runtime's key table (settings.ADAPTER_KEYS).
INGEST_FIELDS: Mapping[str, Field] = {
    "topic": Field(SUBJECT, required=True),
    "protocol": Field(enum("request", "reply")),
    "workers": Field(integer(1, 100)),
    "verify": Field(enum("off", "warn", "enforce")),
    "verify_ca": Field(PATH),
}
STREAM_FIELDS: Mapping[str, Field] = {
    "type": Field(ADAPTER_TYPE),
    "topic": Field(SUBJECT),
    "workers": Field(integer(1, 100)),
    "servers": Field(array(SERVER)),
    "ack_timeout": Field(DURATION),
    "retry_budget": Field(DURATION),
    "max_pending": Field(integer(1, 65536)),
    "publish": Field(enum("auto", "batched", "acked")),
    "name": Field(STREAM_NAME),
    "subjects": Field(array(SUBJECT, min_size=1)),
    "max_age": Field(DURATION),
    "storage": Field(enum("file", "memory")),
    "replicas": Field(integer(1, 5)),
    "max_msgs_per_subject": Field(variant("-1 (unlimited) or an Integer[1]", integer(-1, -1), integer(1))),
    "duplicate_window": Field(DURATION),
}
INGEST = struct(INGEST_FIELDS)
STREAM = struct(STREAM_FIELDS)
ADAPTER_FIELDS: Mapping[str, Field] = {
    "type": Field(ADAPTER_TYPE),
    "queue_len": Field(integer(1, 10_000_000)),
    "shutdown_grace": Field(DURATION),
    "ingest": Field(INGEST, required=True),
    "stream": Field(STREAM),
}
ADAPTER = struct(ADAPTER_FIELDS)


def issuers(value: Any, key: str) -> None:
    if not isinstance(value, Mapping):
        raise RenderError(key, f"expects a Hash of issuer public keys by name, got {_describe(value)}")
    for name, public in value.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name, re.ASCII):
            raise RenderError(
                key, f"issuer name {name!r} expects a match for Choria::Name (letters, digits, _ and -)"
            )
        ISSUER_KEY(public, f"{key}.{name}")


def adapters(value: Any, key: str) -> None:
    if not isinstance(value, Mapping):
        raise RenderError(key, f"expects a Hash of adapters by name, got {_describe(value)}")
    for name, adapter in value.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name, re.ASCII):
            raise RenderError(
                key, f"adapter name {name!r} expects a match for Choria::Name (letters, digits, _ and -)"
            )
        ADAPTER(adapter, f"{key}.{name}")


# The class parameters in declaration order (puppet/manifests/broker.pp), with their checks;
# `None` in the data is accepted only for the Optional ones, as Puppet does.
PARAMETERS: Mapping[str, tuple[Check, bool]] = {
    "ensure": (enum("present", "absent"), False),
    "config_file": (PATH, False),
    "identity": (SINGLE_LINE, True),
    "log_file": (LOG_FILE, False),
    "log_level": (enum("debug", "info", "warn", "error", "fatal"), False),
    "stats_address": (SUBJECT, False),
    "stats_port": (integer(0, 65535), False),
    "middleware_hosts": (array(SERVER), False),
    "security_provider": (enum("puppet", "file", "choria"), False),
    "ssldir": (PATH, True),
    "file_certificate": (PATH, True),
    "file_key": (PATH, True),
    "file_ca": (PATH, True),
    "issuers": (issuers, False),
    "choria_certificate": (PATH, True),
    "choria_key": (PATH, True),
    "choria_ca": (PATH, True),
    "adapters": (adapters, False),
    "manage_package": (boolean, False),
    "install_dir": (PATH, False),
    "package_ensure": (
        variant(
            "'present', 'latest' or a Choria::PackageVersion", enum("present", "latest"), PACKAGE_VERSION
        ),
        False,
    ),
    "package_source": (variant("an absolute path or an http(s) index URL", PATH, INDEX_URL), True),
    "python": (PATH, False),
    "python_packages": (array(OS_PACKAGE), False),
    "manage_service": (boolean, False),
    "service_name": (NAME, False),
    "service_user": (NAME, False),
    "service_group": (NAME, False),
    "pid_file": (PATH, True),
    "limit_nofile": (integer(1024), True),
    "executable": (PATH, True),
    "config_owner": (NAME, False),
    "config_group": (NAME, False),
}


# ---------------------------------------------------------------------------------------------
# Data → parameters → template context
# ---------------------------------------------------------------------------------------------


def _reject_interpolation(value: Any, key: str) -> None:
    """Hiera would interpolate `%{...}`; rendering it literally would differ from Puppet's file."""
    if isinstance(value, str) and "%{" in value:
        raise RenderError(key, f"hiera interpolation is not supported by render, got {value!r}")
    if isinstance(value, Mapping):
        for name, item in value.items():
            _reject_interpolation(name, key)
            _reject_interpolation(item, f"{key}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _reject_interpolation(item, f"{key}[{index}]")


def broker_parameters(data: Mapping[str, Any]) -> dict[str, Any]:
    """The class parameters for `data`: module defaults overridden by `choria::broker::*` keys.

    Keys of other classes (a site's hiera file holds many) and `lookup_options` are ignored; an
    unknown `choria::broker::` key is an error, since it is most likely a typo.
    """
    if not isinstance(data, Mapping):
        raise RenderError("data", f"expects a Hash of hiera keys, got {_describe(data)}")
    parameters = dict(MODULE_DEFAULTS)
    for full_key, value in data.items():
        if not isinstance(full_key, str) or not full_key.startswith(PREFIX):
            continue
        name = full_key[len(PREFIX) :]
        if name not in PARAMETERS:
            known = ", ".join(PREFIX + known for known in PARAMETERS)
            raise RenderError(full_key, f"unknown key (known keys: {known})")
        _reject_interpolation(value, full_key)
        parameters[name] = value

    for name, (check, optional) in PARAMETERS.items():
        value = parameters[name]
        if value is None:
            if not optional:
                raise RenderError(PREFIX + name, "expects a value, got nothing (undef)")
            continue
        check(value, PREFIX + name)

    # The same cross-key checks, with the same words, as puppet/manifests/broker.pp.
    provider = parameters["security_provider"]
    if provider in ("file", "choria"):
        for role in ("certificate", "key", "ca"):
            name = f"{provider}_{role}"
            if parameters[name] is None:
                raise RenderError(PREFIX + name, f"expects a path when security_provider is '{provider}'")
    if provider == "choria" and not parameters["issuers"]:
        raise RenderError(
            PREFIX + "issuers", "expects at least one issuer when security_provider is 'choria'"
        )
    if provider != "choria" and parameters["issuers"]:
        raise RenderError(
            PREFIX + "issuers", f"only the 'choria' security_provider uses issuers, not '{provider}'"
        )
    _check_package_source(parameters["package_source"], parameters["package_ensure"])
    for name, adapter in parameters["adapters"].items():
        top = adapter.get("type")
        nested = (adapter.get("stream") or {}).get("type")
        key = f"{PREFIX}adapters.{name}.type"
        if top is None and nested is None:
            raise RenderError(key, "expects a value: 'jetstream' or 'choria_streams'")
        if top is not None and nested is not None and top != nested:
            raise RenderError(key, f"'{top}' disagrees with stream.type '{nested}'; give the type once")
    return parameters


_WHEEL_NAME = re.compile(r"choria_broker_adapters-([^-]+)(?:-[0-9][^-]*)?-[^-]+-[^-]+-[^-]+\.whl")
_SDIST_NAME = re.compile(r"choria[-_]broker[-_]adapters-([^-]+)\.(?:tar\.gz|zip)")


def package_file_version(file_name: str) -> str | None:
    """The version in a wheel's or sdist's file name, as choria::broker reads it; None if the
    name is not one of this package's."""
    match = _WHEEL_NAME.fullmatch(file_name) or _SDIST_NAME.fullmatch(file_name)
    return match.group(1) if match else None


def _check_package_source(source: str | None, ensure: str) -> None:
    if source is None or not source.startswith("/"):
        return
    file_name = source.rsplit("/", 1)[-1]
    version = package_file_version(file_name)
    if version is None:
        raise RenderError(
            PREFIX + "package_source",
            f"'{source}' is not a choria-broker-adapters wheel or sdist file name",
        )
    if ensure not in ("present", "latest") and ensure != version:
        raise RenderError(
            PREFIX + "package_ensure", f"'{ensure}' disagrees with {file_name}, which holds {version}"
        )


def _setting_text(value: Any) -> str:
    """Puppet's String() of the value, arrays joined with ", " (both are what the EPP writes)."""
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


def adapter_blocks(
    adapters_by_name: Mapping[str, Mapping[str, Any]],
) -> list[tuple[str, list[tuple[str, str]]]]:
    """Each adapter as (name, [(key, value), ...]): names sorted, `type` first, then the other
    keys sorted. `type` inside `stream` becomes the adapter-level `type`; empty arrays are
    left out. The same computation as puppet/manifests/broker/config.pp."""
    blocks = []
    for name in sorted(adapters_by_name):
        adapter = adapters_by_name[name]
        stream = adapter.get("stream") or {}
        adapter_type = adapter.get("type") if adapter.get("type") is not None else stream.get("type")
        settings: dict[str, Any] = {
            "queue_len": adapter.get("queue_len"),
            "shutdown_grace": adapter.get("shutdown_grace"),
        }
        settings.update({f"ingest.{key}": value for key, value in adapter["ingest"].items()})
        settings.update({f"stream.{key}": value for key, value in stream.items() if key != "type"})
        written = {key: value for key, value in settings.items() if value is not None and value != []}
        lines = [("type", str(adapter_type))]
        lines += [(key, _setting_text(written[key])) for key in sorted(written)]
        blocks.append((name, lines))
    return blocks


_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("choria_broker_adapters.config", "templates"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # a config file, not HTML; values are validated to single lines instead
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_broker_config(data: Mapping[str, Any]) -> str:
    """broker.conf text for hiera-style `data`; raises RenderError naming the bad key."""
    parameters = broker_parameters(data)
    template = _ENVIRONMENT.get_template("broker.cfg.j2")
    return template.render(
        identity=parameters["identity"],
        log_file=parameters["log_file"],
        log_level=parameters["log_level"],
        stats_address=parameters["stats_address"],
        stats_port=parameters["stats_port"],
        middleware_hosts=", ".join(parameters["middleware_hosts"]),
        security_provider=parameters["security_provider"],
        ssldir=parameters["ssldir"],
        file_certificate=parameters["file_certificate"],
        file_key=parameters["file_key"],
        file_ca=parameters["file_ca"],
        issuers=sorted(parameters["issuers"].items()),
        choria_certificate=parameters["choria_certificate"],
        choria_key=parameters["choria_key"],
        choria_ca=parameters["choria_ca"],
        adapter_names=", ".join(sorted(parameters["adapters"])),
        adapter_blocks=adapter_blocks(parameters["adapters"]),
    )
