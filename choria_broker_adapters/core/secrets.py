"""Which text may hold a secret, so that messages about it show no more than its name."""

from __future__ import annotations

from choria_broker_adapters.core.servers import redact

# Words in a key's name that mark its value as secret (plugin.nats.pass, a token, a seed, ...).
_SECRET_WORDS = ("pass", "token", "secret", "seed", "cred", "key")


def may_be_secret(key: str) -> bool:
    name = key.lower()
    return any(word in name for word in _SECRET_WORDS)


def preview(line: str, limit: int = 60) -> str:
    """A malformed broker.conf line as a message may quote it: its first word alone when that
    names a secret, URL userinfo masked, cut to `limit` characters."""
    first, _, rest = line.partition(" ")
    if rest and may_be_secret(first):
        return f"{first!r} (the rest of the line is not shown: it may hold a secret)"
    shown = redact(line)
    return repr(shown if len(shown) <= limit else shown[:limit] + "…")
