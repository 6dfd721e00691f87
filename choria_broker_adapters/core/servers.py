"""Server addresses: one parser and one set of schemes for every server list in broker.conf.

Accepted: `host:port`, `[v6]:port`, `nats://host:port`, `tls://host:port`; the port is
required (the Go broker's rule). The URL forms may carry credentials as the Go client reads
them: `nats://user:pass@host:port` (user and password) or `nats://token@host:port` (a token).
Credentials are taken out of the URL at parse time and kept apart (`ServerList.userinfo`), so
a server URL in a log line, an error or `check` output never holds a secret; `redact` scrubs
any other text that might.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote

SCHEMES = ("nats", "tls")
EXPECTED = "host:port or nats://host:port, tls://host:port (the port is required, e.g. js1.example.net:4222)"

_SERVER = re.compile(
    r"(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?:(?P<userinfo>[^@/\s]*)@)?)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]@]+)(?::(?P<port>[^\s/]*))?/?"
)
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^@/\s]+@")
MASK = "***"


@dataclass(frozen=True, slots=True)
class UserInfo:
    """Credentials given in a server URL: a user and password, or a token."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(value for value in (self.password, self.token) if value)


class ServerList(tuple[str, ...]):
    """Server URLs without credentials (compares equal to a plain tuple of them), plus the
    credentials the list's URLs carried, if any."""

    userinfo: UserInfo | None

    def __new__(cls, urls: Iterable[str] = (), userinfo: UserInfo | None = None) -> ServerList:
        instance = super().__new__(cls, tuple(urls))
        instance.userinfo = userinfo
        return instance


def redact(text: str) -> str:
    """`text` with the userinfo of every URL in it replaced by `***`."""
    if "@" not in text:
        return text
    return _URL_USERINFO.sub(lambda match: f"{match.group('scheme')}{MASK}@", text)


def parse_server(text: str) -> tuple[str, UserInfo | None]:
    """One address → (URL for the NATS client without credentials, the credentials it carried).

    ValueError says what is wrong and what is expected, never repeating the credentials."""
    item = text.strip()
    shown = repr(redact(item))
    match = _SERVER.fullmatch(item)
    if not match:
        raise ValueError(f"server {shown} is not an address; expected {EXPECTED}")
    scheme = (match.group("scheme") or "nats").lower()
    if scheme not in SCHEMES:
        raise ValueError(f"server {shown} has scheme {scheme!r}; expected nats:// or tls://")
    host, port = match.group("host"), match.group("port")
    if port is None:
        raise ValueError(f"server {shown} has no port; expected {EXPECTED}")
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"server {shown} has port {port!r}; expected a port from 1 to 65535")
    if ":" in host and not host.startswith("["):
        raise ValueError(f"server {shown}: IPv6 addresses need brackets, e.g. [::1]:4222")
    return f"{scheme}://{host}:{int(port)}", _userinfo(match.group("userinfo"))


def _userinfo(text: str | None) -> UserInfo | None:
    if not text:
        return None
    user, colon, password = text.partition(":")
    if colon:
        return UserInfo(user=unquote(user), password=unquote(password))
    return UserInfo(token=unquote(user))


def parse_servers(value: str | Iterable[str]) -> ServerList:
    """A comma separated list (or an iterable) of addresses; every URL in one list that carries
    credentials must carry the same ones, since one connection uses one set."""
    items = [item.strip() for item in value.split(",")] if isinstance(value, str) else list(value)
    if not items or any(not item for item in items):
        raise ValueError(
            f"{redact(str(value))!r} has an empty entry; expected a comma separated list of {EXPECTED}"
        )
    urls: list[str] = []
    found: set[UserInfo] = set()
    for item in items:
        url, userinfo = parse_server(item)
        urls.append(url)
        if userinfo is not None:
            found.add(userinfo)
    if len(found) > 1:
        raise ValueError("the servers in one list carry different credentials; give every URL the same ones")
    return ServerList(urls, next(iter(found), None))
