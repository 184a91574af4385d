"""Keyed fingerprints of secret bundles.

A bare hash of a short password can be brute-forced by anyone who can list secrets, so a
fingerprint is an HMAC-SHA256 under a per-installation key that lives in the target (created
on first run). The encoding is length-prefixed so ``{"ab": "c"}`` and ``{"a": "bc"}`` never
collide.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping

KEY_BYTES = 32
KEY_FINGERPRINT_CHARS = 32


def new_key() -> bytes:
    """A fresh random HMAC key."""
    return secrets.token_bytes(KEY_BYTES)


def _frame(part: bytes) -> bytes:
    return len(part).to_bytes(8, "big") + part


def bundle_fingerprint(
    key: bytes, data: Mapping[str, bytes], settings: Mapping[str, str] | None = None
) -> str:
    """HMAC over the whole bundle and the settings it is stored with, independent of order.

    Without settings the result is what earlier releases computed, so upgrading never
    re-versions a secret whose settings are all defaults.
    """
    mac = hmac.new(key, b"syncd-bundle-v1", hashlib.sha256)
    for name in sorted(data):
        mac.update(_frame(name.encode("utf-8")))
        mac.update(_frame(data[name]))
    if settings:
        mac.update(_frame(b"\x00settings"))
        for name in sorted(settings):
            mac.update(_frame(name.encode("utf-8")))
            mac.update(_frame(settings[name].encode("utf-8")))
    return mac.hexdigest()


def key_fingerprints(key: bytes, data: Mapping[str, bytes]) -> dict[str, str]:
    """A short HMAC per bundle key, so a plan can say which keys changed (never their values)."""
    return {
        name: hmac.new(
            key, b"syncd-key-v1" + _frame(name.encode("utf-8")) + _frame(value), hashlib.sha256
        ).hexdigest()[:KEY_FINGERPRINT_CHARS]
        for name, value in sorted(data.items())
    }
