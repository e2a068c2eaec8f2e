"""Throw-away TLS material for local servers: a CA, a server and a client certificate.

Made with the ``openssl`` command line tool (on every Debian image; no Python crypto package
needed). The server certificate names ``localhost`` and ``127.0.0.1``, so clients can keep
host-name verification on, as production clients do. For tests and `dev` only: the keys are
unencrypted files and a fresh set is made per directory.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stream.devenv.errors import DevEnvError, ToolNotFoundError

log = logging.getLogger(__name__)

# P-256 keys: generated in milliseconds (RSA takes noticeably longer) and accepted by OpenSSL,
# redis-server, librdkafka and Java alike.
_KEY_ARGS = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")

_CA_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = riskstream dev CA
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""

_LEAF_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = {usage}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
{san}
"""


@dataclass(frozen=True)
class TlsFiles:
    """Paths of a generated CA, server and client certificate with their private keys."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ToolNotFoundError(
            "`openssl` is not on PATH; install it with: apt-get install -y openssl"
        )
    result = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DevEnvError(f"openssl {args[0]} failed:\n{result.stderr.strip()}")


def _leaf(
    directory: Path, name: str, common_name: str, usage: str, san: str, days: int
) -> tuple[Path, Path]:
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    extensions = directory / f"{name}.ext"
    extensions.write_text(_LEAF_EXTENSIONS.format(usage=usage, san=san))
    _openssl(
        "req",
        "-new",
        *_KEY_ARGS,
        "-keyout",
        key.name,
        "-out",
        csr.name,
        "-subj",
        f"/CN={common_name}",
        cwd=directory,
    )
    _openssl(
        "x509",
        "-req",
        "-sha256",
        "-in",
        csr.name,
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        str(days),
        "-extfile",
        extensions.name,
        "-out",
        cert.name,
        cwd=directory,
    )
    csr.unlink()
    extensions.unlink()
    return cert, key


def generate_tls_files(
    directory: Path,
    *,
    hostnames: tuple[str, ...] = ("localhost",),
    ip_addresses: tuple[str, ...] = ("127.0.0.1",),
    days: int = 30,
) -> TlsFiles:
    """Write ``ca.crt``, ``server.crt/.key`` and ``client.crt/.key`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.cnf").write_text(_CA_CONFIG)
    _openssl(
        "req",
        "-x509",
        "-sha256",
        *_KEY_ARGS,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        str(days),
        "-config",
        "ca.cnf",
        cwd=directory,
    )
    names = [f"DNS:{host}" for host in hostnames] + [f"IP:{ip}" for ip in ip_addresses]
    server_cert, server_key = _leaf(
        directory,
        "server",
        hostnames[0] if hostnames else ip_addresses[0],
        "serverAuth",
        f"subjectAltName = {', '.join(names)}",
        days,
    )
    client_cert, client_key = _leaf(
        directory, "client", "riskstream-client", "clientAuth", "", days
    )
    for key in directory.glob("*.key"):
        os.chmod(key, 0o600)
    log.debug("generated a CA, a server and a client certificate in %s", directory)
    return TlsFiles(
        ca_cert=directory / "ca.crt",
        server_cert=server_cert,
        server_key=server_key,
        client_cert=client_cert,
        client_key=client_key,
    )
