"""What only the file system can tell about validated settings: whether the TLS files and the
verification trust material exist and load. `check` reports these problems and `run` exits 78
on them before connecting; building settings stays pure."""

from __future__ import annotations

from pathlib import Path

from choria_broker_adapters.codec.verify import OFF, Trust, TrustError, load_ca_bundle, parse_issuers
from choria_broker_adapters.config.brokerconf import Problem, Source
from choria_broker_adapters.config.keys import ADAPTER_PREFIX
from choria_broker_adapters.config.settings import AdapterSettings, Settings


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
