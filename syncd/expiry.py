"""When a secret's value stops working: the earliest of what its source's metadata says and
the ``notAfter`` of any PEM certificate in the value.

``syncd_secret_expiry_timestamp_seconds`` is built from this. Values are hostile input: a value
that isn't PEM, or holds a block that doesn't parse as a certificate, simply has no certificate
expiry. Nothing here raises on a value or logs one, and what comes out is a timestamp only.

The engine reads values only when their version moved, so a certificate's expiry is kept in
memory per secret, key, reference and version token (``Book``): cycles that don't read still
know it. It is also stored on each version the target holds (``encode_stored``), so a syncd
that restarts, or a CI job that never read the value, knows it without a read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from providers.base import Ref

#: Where a value came from: its reference and the version token it was read at.
Seen = tuple[Ref, str | None]

#: One PEM certificate block (RFC 7468). The body can't hold a ``-``, so a block without its
#: end line stops at the next dash and scanning stays linear in the value's size.
_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]*-----END CERTIFICATE-----")


def certificate_expiry(value: bytes) -> float | None:
    """The earliest ``notAfter`` (Unix seconds) among the PEM certificates in ``value``.

    Each block is parsed on its own, so one broken certificate in a chain doesn't hide the
    others; a value with no block that parses has ``None``.
    """
    soonest: float | None = None
    for block in _CERTIFICATE.finditer(value):
        from cryptography import x509  # only for a value holding a certificate: ~40 ms

        try:
            certificate = x509.load_pem_x509_certificate(block.group())
        except ValueError:  # a garbled block: not a certificate this value can be judged by
            continue
        when = certificate.not_valid_after_utc.timestamp()
        soonest = when if soonest is None else min(soonest, when)
    return soonest


#: What a stored record may be at most: a version has at most a few hundred keys, and
#: anything larger on an object was not written by syncd.
MAX_STORED = 16 * 1024
#: Later than this (the year 4147) is no certificate's expiry.
_LATEST = 2**37


def encode_stored(expiries: Mapping[str, float]) -> str:
    """The certificates' expiries per key as stored on a version ("" when there are none)."""
    if not expiries:
        return ""
    return json.dumps(
        {key: int(when) for key, when in sorted(expiries.items())}, separators=(",", ":")
    )


def decode_stored(raw: str) -> dict[str, float]:
    """A stored record read back from a target object, which anyone who can write the object
    may have edited: anything that isn't a small JSON object of key to whole seconds is no
    record, and each entry that isn't one is left out on its own."""
    if not raw or len(raw) > MAX_STORED:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}
    return {
        key: float(when)
        for key, when in doc.items()
        if isinstance(key, str)
        and isinstance(when, int)
        and not isinstance(when, bool)
        and 0 < when < _LATEST
    }


def earliest(*times: float | None) -> float | None:
    """The soonest of the known times, or ``None`` when none is known."""
    known = [t for t in times if t is not None]
    return min(known) if known else None


@dataclass
class Book:
    """Certificate expiries of the values this process read, per secret and key, with the
    reference and version token they were read at: valid while the source reports that
    token for that reference. A config reload hands the book to the new engine (the
    reference in each entry keeps an edited config from reusing another source's)."""

    _read: dict[str, dict[str, tuple[Ref, str | None, float | None]]] = field(default_factory=dict)

    def read(self, secret: str, key: str, source: Seen, value: bytes) -> float | None:
        """Note a value just read from ``source`` (reference, token); its certificate expiry."""
        when = certificate_expiry(value)
        self._read.setdefault(secret, {})[key] = (*source, when)
        return when

    def known(self, secret: str, key: str, source: Seen) -> float | None:
        """The certificate expiry of the value read at ``source``, if this process read it."""
        seen = self._read.get(secret, {}).get(key)
        if seen is None or source[1] is None or seen[:2] != source:
            return None
        return seen[2]

    def retain(self, secret: str, keys: set[str]) -> None:
        """Forget the keys of ``secret`` that are not in ``keys`` (they left its bundle)."""
        held = self._read.get(secret, {})
        for key in set(held) - keys:
            del held[key]
