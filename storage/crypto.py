"""Secrets at rest: field encryption with rotating keys, blind indexes, keyed OTP hashes.

Encrypted fields use MultiFernet (AES-128-CBC + HMAC-SHA256): the first key encrypts,
every key decrypts, so keys can rotate. Look-ups use an HMAC blind index whose key is
separate and stable, so rotating the encryption keys never changes an index.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

log = logging.getLogger(__name__)

KEY_FILE_NAME = "keys.json"
_UNDECRYPTABLE = "a stored value cannot be decrypted with any configured key"


class KeyConfigError(ValueError):
    """A configured key is unusable: ``setting`` names what to fix, ``cause`` says why."""

    def __init__(self, setting: str, cause: str) -> None:
        super().__init__(f"{setting}: {cause}")
        self.setting = setting
        self.cause = cause


@dataclass(frozen=True)
class KeyMaterial:
    encryption_keys: tuple[str, ...]  # Fernet keys, primary first
    blind_index_key: bytes
    generated_file: Path | None = None  # set when some key came from the generated key file


class FieldCipher:
    """Encrypts and decrypts short text fields; computes blind indexes and OTP hashes."""

    def __init__(self, keys: KeyMaterial) -> None:
        if not keys.encryption_keys:
            raise KeyConfigError("ENCRYPTION_KEYS", "at least one encryption key is needed")
        self._fernets = [_fernet(key, number, len(keys.encryption_keys))
                         for number, key in enumerate(keys.encryption_keys, start=1)]
        self._multi = MultiFernet(self._fernets)
        self._index_key = hmac.new(keys.blind_index_key, b"blind-index", hashlib.sha256).digest()
        self._otp_key = hmac.new(keys.blind_index_key, b"otp-hash", hashlib.sha256).digest()

    def encrypt(self, plain: str) -> str:
        return self._multi.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._multi.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise KeyConfigError("ENCRYPTION_KEYS", _UNDECRYPTABLE) from exc

    def is_primary(self, token: str) -> bool:
        """True when ``token`` was encrypted with the primary key (rotation is done for it)."""
        try:
            self._fernets[0].decrypt(token.encode())
        except InvalidToken:
            return False
        return True

    def rotate(self, token: str) -> str:
        """The same plaintext encrypted with the primary key."""
        try:
            return self._multi.rotate(token.encode()).decode()
        except InvalidToken as exc:
            raise KeyConfigError("ENCRYPTION_KEYS", _UNDECRYPTABLE) from exc

    def blind_index(self, plain: str) -> str:
        return hmac.new(self._index_key, plain.encode(), hashlib.sha256).hexdigest()

    def otp_hash(self, challenge_id: int, code: str) -> str:
        message = f"{challenge_id}:{code}".encode()
        return hmac.new(self._otp_key, message, hashlib.sha256).hexdigest()

    def otp_matches(self, challenge_id: int, code: str, stored_hash: str) -> bool:
        return hmac.compare_digest(self.otp_hash(challenge_id, code), stored_hash)


def _fernet(key: str, number: int, count: int) -> Fernet:
    try:
        return Fernet(key.encode())
    except (ValueError, TypeError) as exc:
        which = "" if count == 1 else f"key {number} of {count}: "
        raise KeyConfigError("ENCRYPTION_KEYS", f"{which}not a Fernet key (32 url-safe base64 "
                             "bytes); make one with `topup-bot generate-key`") from exc


def generate_fernet_key() -> str:
    return Fernet.generate_key().decode()


def resolve_keys(data_dir: Path, encryption_keys: list[str],
                 blind_index_key: str | None) -> KeyMaterial:
    """Configured keys win; what is missing comes from DATA_DIR/keys.json, made once (0600)."""
    path = data_dir / KEY_FILE_NAME
    stored: dict[str, object] = {}
    if not encryption_keys or not blind_index_key:
        stored = _load_or_create_key_file(path)
    try:
        enc = tuple(encryption_keys) or tuple(str(k) for k in stored["encryption_keys"])  # type: ignore[attr-defined]
        index_text = blind_index_key or str(stored["blind_index_key"])
    except (KeyError, TypeError) as exc:
        raise _unusable_key_file(path, f"{exc} is missing" if isinstance(exc, KeyError)
                                 else "unexpected content") from None
    # A key from the file is named by the file: BLIND_INDEX_KEY was not set.
    setting = "BLIND_INDEX_KEY" if blind_index_key else "DATA_DIR"
    where = "" if blind_index_key else f"the blind index key in {path} "
    try:
        index = base64.urlsafe_b64decode(index_text.encode())
    except ValueError as exc:
        raise KeyConfigError(setting, f"{where}must be url-safe base64") from exc
    if len(index) < 32:
        raise KeyConfigError(setting, f"{where}must hold at least 32 bytes")
    return KeyMaterial(encryption_keys=enc, blind_index_key=index,
                       generated_file=path if stored else None)


def _unusable_key_file(path: Path, cause: str) -> KeyConfigError:
    return KeyConfigError("DATA_DIR", f"{path} is not a usable key file ({cause}); restore it "
                          "from its backup, or set ENCRYPTION_KEYS and BLIND_INDEX_KEY")


def _load_or_create_key_file(path: Path) -> dict[str, object]:
    if path.exists():
        try:
            with path.open(encoding="utf-8") as handle:
                data: dict[str, object] = json.load(handle)
        except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
            cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise _unusable_key_file(path, cause.splitlines()[0]) from None
        return data
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "encryption_keys": [generate_fernet_key()],
        "blind_index_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }
    # Written aside then linked in: two processes starting at once agree on one key file,
    # and nobody ever reads a half-written one.
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    temp = Path(temp_name)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(temp, path)
    except FileExistsError:
        return _load_or_create_key_file(path)
    finally:
        temp.unlink(missing_ok=True)
    log.warning("No ENCRYPTION_KEYS/BLIND_INDEX_KEY configured: generated %s (mode 0600). "
                "Back it up: without it stored phone numbers cannot be read.", path)
    return data
