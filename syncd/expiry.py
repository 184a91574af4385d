"""When a secret's value stops working: the earliest of what its source's metadata says and
the ``notAfter`` of any PEM certificate in the value.

``syncd_secret_expiry_timestamp_seconds`` is built from this. Values are hostile input: a value
that isn't PEM, or holds a block that doesn't parse as a certificate, simply has no certificate
expiry. Nothing here raises on a value or logs one, and what comes out is a timestamp only.

The engine reads values only when their version moved, so a certificate's expiry is kept in
memory per secret, key and version token (``Book``): cycles that don't read still know it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cryptography import x509

#: One PEM certificate block (RFC 7468). The body can't hold a ``-``, so a block without its
#: end line stops at the next dash and scanning stays linear in the value's size.
_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]*-----END CERTIFICATE-----")


def certificate_expiry(value: bytes) -> float | None:
    """The earliest ``notAfter`` (Unix seconds) among the PEM certificates in ``value``.

    Each block is parsed on its own, so one broken certificate in a chain doesn't hide the
    others; a value with no block that parses has ``None``.
    """
    earliest: float | None = None
    for block in _CERTIFICATE.finditer(value):
        try:
            certificate = x509.load_pem_x509_certificate(block.group())
        except ValueError:  # a garbled block: not a certificate this value can be judged by
            continue
        when = certificate.not_valid_after_utc.timestamp()
        earliest = when if earliest is None else min(earliest, when)
    return earliest


def earliest(*times: float | None) -> float | None:
    """The soonest of the known times, or ``None`` when none is known."""
    known = [t for t in times if t is not None]
    return min(known) if known else None


@dataclass
class Book:
    """Certificate expiries of the values this process read, per secret and key, with the
    version token they were read at: valid for as long as the source reports that token."""

    _read: dict[str, dict[str, tuple[str | None, float | None]]] = field(default_factory=dict)

    def read(self, secret: str, key: str, token: str | None, value: bytes) -> float | None:
        """Note a value just read and return its certificate expiry."""
        when = certificate_expiry(value)
        self._read.setdefault(secret, {})[key] = (token, when)
        return when

    def known(self, secret: str, key: str, token: str | None) -> float | None:
        """The certificate expiry of the value read at ``token``, if this process read it."""
        seen = self._read.get(secret, {}).get(key)
        if seen is None or token is None or seen[0] != token:
            return None
        return seen[1]

    def retain(self, secret: str, keys: set[str]) -> None:
        """Forget the keys of ``secret`` that are not in ``keys`` (they left its bundle)."""
        held = self._read.get(secret, {})
        for key in set(held) - keys:
            del held[key]
