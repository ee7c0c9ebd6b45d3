"""Keys, sealing and ids of a repository.

A repository has two 32-byte secrets: ``id_key`` (chunk ids are keyed blake3 of the
plaintext, so ids say nothing about content to whoever lacks the key) and ``enc_key``
(AES-256-GCM). With ``encryption = none`` the id key is stored in the repository's config and
nothing is encrypted: every blob is still checked against its id on reading and every object
against its name. With ``repokey`` both keys are sealed in ``keys/<name>`` by a key derived
from the password with scrypt (memory-hard).

Sealed bytes are ``nonce (12) || AES-GCM(enc_key, nonce, envelope, aad)``, with a random nonce
per seal (NIST's bound of 2**32 seals per key is about 4 PiB of 1 MiB chunks) and the
object's kind or id as associated data, so a sealed object cannot be passed off as another.
An envelope is ``flags (1 byte: bit 0 = zstd) || payload``.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass

import blake3
import zstandard

from ..errors import IntegrityError, RepositoryError

NONCE = 12
TAG = 16
COMPRESSED = 0x01
ZSTD_LEVEL = 3
#: stored uncompressed unless zstd saves at least this fraction (random data does not pay)
MIN_SAVING = 1 / 32
#: scrypt cost: 64 MiB of memory and ~0.2 s here; stored in each key file
KDF = {"name": "scrypt", "n": 1 << 16, "r": 8, "p": 1}
MAX_DECOMPRESSED = 64 << 20  # no blob or object of ours inflates beyond this

_local = threading.local()


def _zstd_c() -> zstandard.ZstdCompressor:
    c = getattr(_local, "c", None)
    if c is None:
        c = _local.c = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return c


def _zstd_d() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def object_name(stored: bytes) -> str:
    """The name of a stored object: unkeyed blake3 of its stored bytes, in hex (anyone can
    check a file against its name without the key)."""
    return blake3.blake3(stored).hexdigest()


@dataclass(frozen=True)
class Keys:
    """The secrets of one repository; ``enc_key`` is None without encryption."""

    id_key: bytes
    enc_key: bytes | None

    @classmethod
    def generate(cls, encrypted: bool) -> Keys:
        return cls(os.urandom(32), os.urandom(32) if encrypted else None)

    @property
    def encrypted(self) -> bool:
        return self.enc_key is not None

    def blob_id(self, data: bytes | memoryview) -> bytes:
        """The 32-byte id of a chunk's plaintext."""
        return blake3.blake3(data, key=self.id_key).digest()

    def seal(self, data: bytes | memoryview, aad: bytes, compress: bool = True) -> bytes:
        """``data`` as stored: compressed when that pays, then encrypted when keyed."""
        payload = data
        flags = 0
        if compress:
            packed = _zstd_c().compress(data)
            if len(packed) < len(data) * (1 - MIN_SAVING):
                payload, flags = packed, COMPRESSED
        envelope = (b"\x01" if flags else b"\x00") + payload  # one copy, from any buffer
        if self.enc_key is None:
            return envelope
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(NONCE)
        return nonce + AESGCM(self.enc_key).encrypt(nonce, envelope, aad)

    def unseal(self, stored: bytes, aad: bytes, what: str) -> bytes:
        """The plaintext of ``stored``; `IntegrityError` naming ``what`` if it fails."""
        envelope = stored
        if self.enc_key is not None:
            from cryptography.exceptions import InvalidTag
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            if len(stored) < NONCE + TAG + 1:
                raise IntegrityError(f"{what} is {len(stored)} bytes, too short to be sealed")
            try:
                envelope = AESGCM(self.enc_key).decrypt(stored[:NONCE], stored[NONCE:], aad)
            except InvalidTag:
                raise IntegrityError(f"{what} fails authentication (damaged or not ours)") \
                    from None
        if not envelope:
            raise IntegrityError(f"{what} is empty")
        flags, payload = envelope[0], envelope[1:]
        if flags & ~COMPRESSED:
            raise IntegrityError(f"{what} has unknown flags {flags:#x}")
        if flags & COMPRESSED:
            try:
                return _zstd_d().decompress(payload, max_output_size=MAX_DECOMPRESSED)
            except zstandard.ZstdError as e:
                raise IntegrityError(f"{what} does not decompress: {e}") from None
        return payload

    def check_blob(self, blob_id: bytes, data: bytes, what: str) -> bytes:
        """``data`` if it hashes to ``blob_id``, else `IntegrityError`."""
        if self.blob_id(data) != blob_id:
            raise IntegrityError(f"{what}: content does not match its id {blob_id.hex()[:16]}")
        return data


def _kek(password: bytes, salt: bytes, kdf: dict) -> bytes:
    if kdf.get("name") != "scrypt":
        raise RepositoryError(f"key derivation {kdf.get('name')!r} is not supported")
    n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
    if not (2 <= n <= 1 << 22 and 1 <= r <= 32 and 1 <= p <= 16):
        raise RepositoryError(f"key derivation cost n={n} r={r} p={p} is out of range")
    import hashlib  # scrypt: only for keys (hashlib loads OpenSSL)

    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=256 * r * n + (1 << 20),
                          dklen=32)


def seal_keys(keys: Keys, password: bytes) -> bytes:
    """A key file: ``keys`` sealed by a key derived from ``password``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    salt, nonce = os.urandom(16), os.urandom(NONCE)
    secret = json.dumps({"id_key": keys.id_key.hex(), "enc_key": keys.enc_key.hex()}).encode()
    sealed = AESGCM(_kek(password, salt, KDF)).encrypt(nonce, secret, b"vmsift key")
    doc = {"kdf": {**KDF, "salt": base64.b64encode(salt).decode()},
           "sealed": base64.b64encode(nonce + sealed).decode()}
    return json.dumps(doc, indent=1).encode() + b"\n"


def open_keys(key_file: bytes, password: bytes) -> Keys | None:
    """The keys in ``key_file`` if ``password`` opens it, else None."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        doc = json.loads(key_file)
        kdf = doc["kdf"]
        salt = base64.b64decode(kdf["salt"])
        sealed = base64.b64decode(doc["sealed"])
    except (ValueError, KeyError, TypeError) as e:
        raise RepositoryError(f"key file is not readable: {e}") from None
    try:
        secret = AESGCM(_kek(password, salt, kdf)).decrypt(sealed[:NONCE], sealed[NONCE:],
                                                           b"vmsift key")
    except InvalidTag:
        return None
    d = json.loads(secret)
    return Keys(bytes.fromhex(d["id_key"]), bytes.fromhex(d["enc_key"]))
