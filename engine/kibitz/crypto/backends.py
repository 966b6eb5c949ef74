"""The two :class:`kibitz.crypto.seal.CryptoBackend` implementations.

- :class:`CPythonCrypto`: ``hashlib.pbkdf2_hmac`` (run in a worker thread: 210 000 iterations take
  ~50 ms) and ``cryptography``'s AES-GCM, imported lazily so this module imports under Pyodide.
- :class:`WebCrypto`: the page's ``crypto.subtle`` through two small shim functions
  (``kibitz_shim.pbkdf2Sha256`` and ``aesGcm``); bytes cross as Uint8Array copies and come back as
  ``bytes``. Needs a secure context (https or loopback), as WebCrypto does.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

_KEY_BYTES = 32


class CPythonCrypto:
    """PBKDF2 from ``hashlib``, AES-256-GCM from ``cryptography`` (the agent extra installs it)."""

    async def pbkdf2_sha256(self, password: bytes, salt: bytes, iterations: int) -> bytes:
        return await asyncio.to_thread(hashlib.pbkdf2_hmac, "sha256", password, salt, iterations, _KEY_BYTES)

    async def aes_gcm_encrypt(self, key: bytes, iv: bytes, plaintext: bytes) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM(key).encrypt(iv, plaintext, None)

    async def aes_gcm_decrypt(self, key: bytes, iv: bytes, sealed: bytes) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM(key).decrypt(iv, sealed, None)


def _shim() -> Any:
    try:
        import kibitz_shim  # type: ignore[import-not-found]
    except ImportError as exc:
        raise RuntimeError("WebCrypto needs kibitz_shim: load the engine through widget.js") from exc
    return kibitz_shim


def _u8(data: bytes) -> Any:
    from pyodide.ffi import to_js

    return to_js(bytes(data))  # a Uint8Array copy, never a view into wasm memory


def _from_js(value: Any) -> bytes:
    return bytes(value.to_bytes())


class WebCrypto:
    """``crypto.subtle`` in the page, through the shim."""

    async def pbkdf2_sha256(self, password: bytes, salt: bytes, iterations: int) -> bytes:
        return _from_js(await _shim().pbkdf2Sha256(_u8(password), _u8(salt), iterations))

    async def aes_gcm_encrypt(self, key: bytes, iv: bytes, plaintext: bytes) -> bytes:
        return _from_js(await _shim().aesGcm(True, _u8(key), _u8(iv), _u8(plaintext)))

    async def aes_gcm_decrypt(self, key: bytes, iv: bytes, sealed: bytes) -> bytes:
        return _from_js(await _shim().aesGcm(False, _u8(key), _u8(iv), _u8(sealed)))
