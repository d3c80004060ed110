"""API-key material: generation, the peppered lookup index and the scrypt hash.

Guarantees:
- A raw API key is never stored.  A key is stored as ``scrypt(sha256(key), per-key salt)``; a
  provisioned ``key_sha256`` is the same ``sha256(key)``, so both forms verify the same way.
- Keys are indexed by ``HMAC-SHA256(pepper, sha256(key))`` truncated to 80 bits, where the
  pepper is a random secret in ``<data_dir>/secret.key`` (not in the database, so a leaked
  database alone does not allow fast offline guessing); it is created 0600, atomically, once.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from eventtally.durability.files import atomic_write

from ..errors import MetadataError

PEPPER_NAME = "secret.key"
# scrypt cost: about 35 ms and 16 MiB per verification on the reference machine.  It is paid
# once per key per process (verified keys are cached), never per request.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_LOOKUP_HEX = 20  # 80 bits of the peppered HMAC: collisions are negligible for any key count


def generate_key() -> tuple[str, str]:
    """A new raw key and its display prefix: ``XXXXXXXX-`` + 63 random URL-safe characters.

    The shape (72 characters) follows the hosted service's documented placeholder; the 8 hex
    characters before the dash are the public key id, the rest carries 378 random bits.
    """
    display = secrets.token_hex(4)
    return f"{display}-{secrets.token_urlsafe(48)[:63]}", display


@dataclass(frozen=True)
class _KeySecret:
    params: str
    salt: bytes
    digest: bytes


def _load_pepper(data_dir: Path) -> bytes:
    """Read ``secret.key``, creating it (mode 0600, atomically) on first use."""
    path = data_dir / PEPPER_NAME
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    tmp = data_dir / f".{PEPPER_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
    # Exclusive: if another process won the race, its pepper is kept and used.
    atomic_write(path, (secrets.token_hex(32) + "\n").encode(), tmp=tmp, exclusive=True)
    return bytes.fromhex(path.read_text().strip())


def key_digest(raw_key: str) -> bytes:
    """SHA-256 of the raw key's UTF-8 bytes: the material that is salted and hashed."""
    return hashlib.sha256(raw_key.encode("utf-8")).digest()


def digest_from_sha256_hex(value: object) -> bytes:
    """Parse a provisioned ``key_sha256`` (64 hex digits)."""
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value.strip()):
        raise MetadataError("key_sha256: expected 64 hexadecimal digits (sha256 of the key)")
    return bytes.fromhex(value.strip())


def _scrypt(digest: bytes, salt: bytes, params: str) -> bytes:
    name, n, r, p = params.split("$")
    if name != "scrypt":
        raise MetadataError(f"unknown key hash scheme {name!r}")
    return hashlib.scrypt(digest, salt=salt, n=int(n), r=int(r), p=int(p), dklen=32)


def _hash_new(digest: bytes) -> tuple[str, bytes, bytes]:
    params = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}"
    salt = secrets.token_bytes(16)
    return params, salt, _scrypt(digest, salt, params)
