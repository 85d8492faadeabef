"""TLS for the panel: on first run a small local CA and a server certificate signed by it.

The CA file is exported (`panel/tls/ca.pem`) for integrations that verify certificates
(PHP honours SSL_CERT_FILE); a configured certificate replaces all of this.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sendworx.shared.durable import atomic_write

VALID_DAYS = 825


@dataclass(frozen=True)
class TlsFiles:
    certificate: Path
    private_key: Path
    ca: Path | None


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sendworx"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def host_names(extra: list[str]) -> list[str]:
    names = ["localhost", socket.gethostname(), socket.getfqdn(), *extra]
    return list(dict.fromkeys(name for name in names if name))


def ensure_certificates(directory: Path, names: list[str]) -> TlsFiles:
    """Create the CA and server certificate once; later runs reuse them."""
    files = TlsFiles(directory / "server.pem", directory / "server.key", directory / "ca.pem")
    if files.certificate.exists() and files.private_key.exists():
        return files
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("sendworx local CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    alternative_names: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    alternative_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    atomic_write(directory / "ca.key", _pem_key(ca_key), mode=0o600)
    atomic_write(files.ca or directory / "ca.pem", ca_cert.public_bytes(pem), mode=0o644)
    atomic_write(files.private_key, _pem_key(server_key), mode=0o600)
    atomic_write(
        files.certificate, server_cert.public_bytes(pem) + ca_cert.public_bytes(pem), mode=0o644
    )
    return files
