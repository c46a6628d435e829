"""Sealing shared entries: AES-256-GCM with the cache key as associated data."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["SEAL_VERSION", "Sealer", "UnsealError"]

SEAL_VERSION = b"\x01"
_NONCE = 12
_TAG = 16


class UnsealError(Exception):
    """An entry that is not one we sealed for this key: tampered, truncated, moved or sealed
    under another key. Treated as a miss."""


class Sealer:
    """Encrypts and authenticates values with one 256-bit key.

    Layout: version byte, 96-bit random nonce, ciphertext, 128-bit tag. The associated data
    (the entry's cache key) binds a sealed value to its key, so it cannot be replayed under
    another one. ``cryptography`` is imported here, only when a tier is configured.
    """

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(key) != 32:
            raise ValueError(f"an AES-256 key is 32 bytes, got {len(key)}")
        self._aead: Any = AESGCM(key)

    def seal(self, associated: bytes, plaintext: bytes) -> bytes:
        """The sealed form of ``plaintext`` bound to ``associated``."""
        nonce = os.urandom(_NONCE)
        return SEAL_VERSION + nonce + self._aead.encrypt(nonce, plaintext, associated)

    def open(self, associated: bytes, sealed: bytes) -> bytes:
        """The plaintext of ``sealed``; ``UnsealError`` unless it was sealed by this key for
        ``associated`` and is intact."""
        from cryptography.exceptions import InvalidTag

        if len(sealed) < 1 + _NONCE + _TAG:
            raise UnsealError(f"truncated ({len(sealed)} bytes)")
        if sealed[:1] != SEAL_VERSION:
            raise UnsealError(f"unknown format version {sealed[0]}")
        nonce = sealed[1 : 1 + _NONCE]
        try:
            return bytes(self._aead.decrypt(nonce, sealed[1 + _NONCE :], associated))
        except InvalidTag:
            raise UnsealError(
                "authentication failed (tampered, moved from another key, or another key)"
            ) from None
