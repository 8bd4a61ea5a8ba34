"""A throwaway certificate authority for HTTPS tests (the release repository served with a
certificate no system store trusts), and a folder served with it from a thread of this process."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _alt_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def throwaway_ca(tmp: Path, names: Sequence[str] = ("127.0.0.1",)) -> Tuple[Path, Path, Path]:
    """A CA and a server certificate for `names`, IP addresses or DNS names (PEM files in `tmp`):
    ca, cert, key."""
    now = datetime.now(timezone.utc)

    def certificate(subject, issuer, public_key, signing_key, ca: bool):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_alt_name(name) for name in names]),
                critical=False,
            )
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("edge-deploy test CA", "edge-deploy test CA", ca_key.public_key(), ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate(names[0], "edge-deploy test CA", key.public_key(), ca_key, False)
    paths = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


class ServedRepository:
    """A folder (the signed repository) served from a thread of this process: over HTTPS with a
    certificate for `name` signed by a throwaway CA that no system store holds (made in `tls_dir`),
    else over plain HTTP. Bound to `host` (default loopback); `server.fault` makes it misbehave and
    `server.seen` lists its requests (tests/https_server.py)."""

    def __init__(
        self,
        folder: Path,
        tls_dir: Optional[Path] = None,
        stall_seconds: float = 30.0,
        host: str = "127.0.0.1",
        name: Optional[str] = None,
    ):
        import threading

        from tests import https_server

        name = name or host
        self.ca_file, cert, key = throwaway_ca(tls_dir, (name,)) if tls_dir else (None, None, None)
        self.server = https_server.make(0, str(folder), cert, key, stall_seconds=stall_seconds, host=host)
        self.url = "%s://%s:%d/" % ("https" if cert else "http", name, self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1})
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
