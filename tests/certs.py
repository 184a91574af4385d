"""Self-signed test certificates with a chosen ``notAfter`` (generated, never real ones), for
the expiry tests of the engine and of each provider."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def certificate(not_after: dt.datetime, *, name: str = "syncd-test") -> bytes:
    """A self-signed certificate valid until ``not_after`` (whole seconds), as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - dt.timedelta(days=365))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def days_from_now(days: float) -> dt.datetime:
    """Whole seconds ``days`` from now (a certificate keeps no fraction of a second)."""
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).replace(microsecond=0)
