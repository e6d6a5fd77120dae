"""Field encryption, blind indexes, OTP hashes, and where the keys come from."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from storage.crypto import (
    KEY_FILE_NAME,
    FieldCipher,
    KeyConfigError,
    KeyMaterial,
    generate_fernet_key,
    resolve_keys,
)

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def make_cipher(*fernet_keys: str, index_key: bytes | None = None) -> FieldCipher:
    return FieldCipher(KeyMaterial(encryption_keys=fernet_keys or (generate_fernet_key(),),
                                   blind_index_key=index_key or os.urandom(32)))


# --- FieldCipher -------------------------------------------------------------------------

@pytest.mark.parametrize("plain", ["+85512345678", "8985501234567890123", "លេខទូរស័ព្ទ", ""])
def test_encrypt_decrypt_round_trip(cipher: FieldCipher, plain: str) -> None:
    token = cipher.encrypt(plain)
    assert token != plain
    assert plain == "" or plain not in token
    assert cipher.decrypt(token) == plain


def test_same_plaintext_encrypts_differently_each_time(cipher: FieldCipher) -> None:
    tokens = {cipher.encrypt("+85512345678") for _ in range(5)}
    assert len(tokens) == 5
    assert {cipher.decrypt(t) for t in tokens} == {"+85512345678"}


def test_decrypt_with_another_key_raises_key_config_error(cipher: FieldCipher) -> None:
    token = make_cipher().encrypt("+85512345678")
    with pytest.raises(KeyConfigError, match="cannot be decrypted"):
        cipher.decrypt(token)
    with pytest.raises(KeyConfigError):
        cipher.decrypt("not a token")


def test_every_key_decrypts_and_the_first_encrypts() -> None:
    old, new = generate_fernet_key(), generate_fernet_key()
    index_key = os.urandom(32)
    old_only = make_cipher(old, index_key=index_key)
    both = make_cipher(new, old, index_key=index_key)
    legacy = old_only.encrypt("+855962345678")

    assert both.decrypt(legacy) == "+855962345678"
    assert both.is_primary(legacy) is False
    rotated = both.rotate(legacy)
    assert both.is_primary(rotated) is True
    assert Fernet(new.encode()).decrypt(rotated.encode()) == b"+855962345678"
    assert both.is_primary(both.encrypt("x")) is True
    with pytest.raises(KeyConfigError):
        old_only.decrypt(rotated)


def test_blind_index_is_deterministic_hex(cipher: FieldCipher) -> None:
    index = cipher.blind_index("+85512345678")
    assert HEX64.match(index)
    assert cipher.blind_index("+85512345678") == index
    assert cipher.blind_index("+85512345679") != index
    assert "85512345678" not in index


def test_blind_index_depends_on_the_blind_index_key_only() -> None:
    enc = generate_fernet_key()
    index_key = os.urandom(32)
    one = make_cipher(enc, index_key=index_key)
    other_index_key = make_cipher(enc, index_key=os.urandom(32))
    other_encryption_key = make_cipher(generate_fernet_key(), index_key=index_key)

    assert one.blind_index("+85512345678") != other_index_key.blind_index("+85512345678")
    assert one.blind_index("+85512345678") == other_encryption_key.blind_index("+85512345678")


def test_otp_hash_is_bound_to_the_challenge_id(cipher: FieldCipher) -> None:
    stored = cipher.otp_hash(17, "123456")
    assert HEX64.match(stored)
    assert "123456" not in stored
    assert cipher.otp_matches(17, "123456", stored) is True
    assert cipher.otp_matches(17, "123457", stored) is False
    assert cipher.otp_matches(18, "123456", stored) is False  # same code, other challenge
    assert cipher.otp_hash(18, "123456") != stored
    # Neither the blind index of the code nor another deployment's hash matches.
    assert cipher.otp_matches(17, "123456", cipher.blind_index("123456")) is False
    assert make_cipher().otp_matches(17, "123456", stored) is False


def test_a_cipher_needs_an_encryption_key() -> None:
    with pytest.raises(KeyConfigError):
        FieldCipher(KeyMaterial(encryption_keys=(), blind_index_key=os.urandom(32)))


# --- resolve_keys ------------------------------------------------------------------------

def test_missing_keys_are_generated_into_a_private_key_file_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = tmp_path / "data"
    path = data_dir / KEY_FILE_NAME

    with caplog.at_level(logging.WARNING, logger="storage.crypto"):
        first = resolve_keys(data_dir, [], None)
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.generated_file == path
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0].getMessage()
    assert os.listdir(data_dir) == [KEY_FILE_NAME]  # no temporary file left behind

    stored = json.loads(path.read_text(encoding="utf-8"))
    assert tuple(stored["encryption_keys"]) == first.encryption_keys
    assert base64.urlsafe_b64decode(stored["blind_index_key"]) == first.blind_index_key
    assert len(first.blind_index_key) == 32
    cipher = FieldCipher(first)  # the generated keys are usable
    assert cipher.decrypt(cipher.encrypt("+85512345678")) == "+85512345678"

    content = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="storage.crypto"):
        second = resolve_keys(data_dir, [], None)
    assert second == first
    assert path.read_bytes() == content
    assert path.stat().st_mtime_ns == mtime
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_configured_keys_win_over_the_key_file(tmp_path: Path) -> None:
    generated = resolve_keys(tmp_path, [], None)
    content = (tmp_path / KEY_FILE_NAME).read_bytes()
    enc = [generate_fernet_key(), generate_fernet_key()]
    index = os.urandom(32)

    configured = resolve_keys(tmp_path, enc, b64(index))

    assert configured.encryption_keys == tuple(enc)
    assert configured.blind_index_key == index
    assert configured.generated_file is None
    assert configured.encryption_keys != generated.encryption_keys
    assert (tmp_path / KEY_FILE_NAME).read_bytes() == content


def test_fully_configured_keys_create_no_key_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    enc = generate_fernet_key()
    with caplog.at_level(logging.WARNING, logger="storage.crypto"):
        keys = resolve_keys(tmp_path, [enc], b64(os.urandom(32)))
    assert keys.encryption_keys == (enc,)
    assert keys.generated_file is None
    assert not (tmp_path / KEY_FILE_NAME).exists()
    assert caplog.records == []


def test_a_partly_configured_key_set_takes_the_rest_from_the_file(tmp_path: Path) -> None:
    generated = resolve_keys(tmp_path, [], None)
    enc = generate_fernet_key()
    index = os.urandom(40)

    only_enc = resolve_keys(tmp_path, [enc], None)
    assert only_enc.encryption_keys == (enc,)
    assert only_enc.blind_index_key == generated.blind_index_key
    assert only_enc.generated_file == tmp_path / KEY_FILE_NAME

    only_index = resolve_keys(tmp_path, [], b64(index))
    assert only_index.encryption_keys == generated.encryption_keys
    assert only_index.blind_index_key == index


def test_a_malformed_encryption_key_names_the_setting(tmp_path: Path) -> None:
    for bad in ("not-a-fernet-key", b64(os.urandom(16)), ""):
        keys = resolve_keys(tmp_path, [generate_fernet_key(), bad], b64(os.urandom(32)))
        with pytest.raises(KeyConfigError, match="ENCRYPTION_KEYS"):
            FieldCipher(keys)


@pytest.mark.parametrize("index_key", [b64(os.urandom(16)), b64(os.urandom(31)), "abc="])
def test_a_short_blind_index_key_is_refused(tmp_path: Path, index_key: str) -> None:
    with pytest.raises(KeyConfigError, match="BLIND_INDEX_KEY"):
        resolve_keys(tmp_path, [generate_fernet_key()], index_key)
    assert not (tmp_path / KEY_FILE_NAME).exists()


def test_a_blind_index_key_that_is_not_base64_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError, match="BLIND_INDEX_KEY: must be url-safe base64"):
        resolve_keys(tmp_path, [generate_fernet_key()], b64(os.urandom(32))[:-2] + "A")


@pytest.mark.parametrize("other_pid", [
    pytest.param(2000, id="different-pids"),
    # Two processes with one PID (PID 1 in two containers sharing DATA_DIR) must not
    # share a temporary file either.
    pytest.param(1000, id="same-pid"),
])
def test_two_processes_generating_keys_at_once_agree(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        other_pid: int) -> None:
    """Another process creates the key file while this one is about to link its own in:
    both must end up with the keys that are in the file."""
    real_link = os.link
    other: list[KeyMaterial] = []

    def link_after_the_other_process(src: str, dst: str) -> None:
        monkeypatch.setattr(os, "link", real_link)
        monkeypatch.setattr(os, "getpid", lambda: other_pid)
        other.append(resolve_keys(tmp_path, [], None))  # the other process, start to end
        monkeypatch.setattr(os, "getpid", lambda: 1000)
        real_link(src, dst)

    monkeypatch.setattr(os, "getpid", lambda: 1000)
    monkeypatch.setattr(os, "link", link_after_the_other_process)
    with caplog.at_level(logging.WARNING, logger="storage.crypto"):
        mine = resolve_keys(tmp_path, [], None)

    assert other == [mine]
    stored = json.loads((tmp_path / KEY_FILE_NAME).read_text(encoding="utf-8"))
    assert tuple(stored["encryption_keys"]) == mine.encryption_keys
    assert sorted(os.listdir(tmp_path)) == [KEY_FILE_NAME]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
