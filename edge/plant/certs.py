"""Self-signed certificates for the PLC links (``edge-keys --opcua``): OPC UA wants each
application's URI in its certificate, and a TLS client checks the host name."""

from __future__ import annotations

import datetime
import ipaddress
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

APPLICATION_URI = "urn:edge-inspect:{name}"


def make_certificate(folder: Path, name: str, hosts: list[str] | None = None, years: int = 10) -> dict[str, Path]:
    """An RSA-2048 key and a self-signed certificate for ``name`` (its application URI
    ``urn:edge-inspect:<name>``, ``hosts`` as DNS names or IP addresses; default: this machine's
    name and localhost): NAME.der and NAME.pem (give them to the other side), NAME.key.pem (keep it)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(APPLICATION_URI.format(name=name))]
    for host in hosts or [socket.gethostname(), "localhost", "127.0.0.1"]:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.timezone.utc)
    usage = x509.KeyUsage(True, True, True, True, False, True, False, False, False)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365 * years))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    paths = {"der": folder / f"{name}.der", "pem": folder / f"{name}.pem", "key": folder / f"{name}.key.pem"}
    paths["der"].write_bytes(cert.public_bytes(serialization.Encoding.DER))
    paths["pem"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths["key"].chmod(0o600)
    return paths
