"""Throw-away test PKI made with the openssl CLI: a CA, a server and a client certificate.

The `cryptography` package is not a dependency, and openssl is on every machine that runs
nats-server tests. EC P-256 keys keep generation fast.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_name: str

    def nats_server_tls_block(self, *, verify_clients: bool = True) -> str:
        """nats-server config requiring TLS (and, by default, a client certificate from our CA)."""
        return (
            "tls {\n"
            f'  cert_file: "{self.server_cert}"\n'
            f'  key_file: "{self.server_key}"\n'
            f'  ca_file: "{self.ca}"\n'
            f"  verify: {'true' if verify_clients else 'false'}\n"
            "  timeout: 5\n"
            "}"
        )

    def puppet_ssldir(self, ssldir: Path) -> Path:
        """Client files in Puppet's layout: certs/ca.pem, certs/<name>.pem, private_keys/<name>.pem"""
        (ssldir / "certs").mkdir(parents=True, exist_ok=True)
        (ssldir / "private_keys").mkdir(parents=True, exist_ok=True)
        (ssldir / "certs" / "ca.pem").write_bytes(self.ca.read_bytes())
        (ssldir / "certs" / f"{self.client_name}.pem").write_bytes(self.client_cert.read_bytes())
        (ssldir / "private_keys" / f"{self.client_name}.pem").write_bytes(self.client_key.read_bytes())
        return ssldir


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def make_ca(directory: Path, name: str = "ca") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", *_EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN=Test CA {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.pem", directory / f"{name}.key"


def issue(
    directory: Path, ca: Path, ca_key: Path, name: str, common_name: str, extensions: str
) -> tuple[Path, Path]:
    """A certificate for `common_name` signed by the CA, with the given v3 extensions."""
    (directory / f"{name}.ext").write_text(extensions + "\n")
    _openssl(
        "req", "-new", *_EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr",
        "-subj", f"/CN={common_name}",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.pem", directory / f"{name}.key"


def make_pki(directory: Path, client_name: str = "adapter.example.net") -> Pki:
    ca, ca_key = make_ca(directory)
    server_cert, server_key = issue(
        directory,
        ca,
        ca_key,
        "server",
        "localhost",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
    )
    client_cert, client_key = issue(
        directory, ca, ca_key, "client", client_name, "extendedKeyUsage=clientAuth"
    )
    return Pki(directory, ca, ca_key, server_cert, server_key, client_cert, client_key, client_name)
