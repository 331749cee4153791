"""C2SP signed notes and the signer: spec and Go vectors, mutations, key rotation, key files."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.audit.note import (
    AmbiguousKeyError,
    BadSignatureError,
    InvalidVerifierKeyError,
    MalformedNoteError,
    NoteError,
    UnknownKeyError,
    Verifier,
    VerifierSet,
    key_id,
    open_note,
)
from gateway.audit.signer import (
    Ed25519FileSigner,
    Signer,
    SignerError,
    SigningKeyError,
    sign_note,
)

# Source: C2SP signed-note.md (the example at C2SP/C2SP@d4c16da5), as quoted in the
# OneCard DESIGN.md field notes.
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_TEXT = "This is an example message.\n"
SPEC_SIG = (
    "\u2014 example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)
SPEC_NOTE = (SPEC_TEXT + "\n" + SPEC_SIG).encode()

# Source: golang.org/x/mod sumdb/note/note_test.go (TestSign, TestOpen, TestNewVerifier).
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvq"
    "fqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTG"
    "wnWLox33WWd1RvMc+QQ=\n"
)


def peter_signer(tmp_path: Path) -> Ed25519FileSigner:
    """Peter's key from the Go tests, stored as a raw 32-byte seed file with mode 0600."""
    raw = base64.b64decode(PETER_SKEY.split("+", 4)[4])
    assert raw[0] == 0x01
    path = tmp_path / "peter.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(raw[1:])
    return Ed25519FileSigner(path, "PeterNeumann")


# --- verifier keys ---------------------------------------------------------------------------


def test_spec_verifier_key() -> None:
    v = Verifier.parse(SPEC_VKEY)
    assert v.name == "example.com/foo"
    assert v.key_id.hex() == "530d903a"
    assert key_id(v.name, v.public_key) == bytes.fromhex("530d903a")
    assert v.key_string() == SPEC_VKEY


def test_verifier_key_with_plus_in_base64() -> None:
    # sum.golang.org's published key: its base64 part contains '+'.
    vkey = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
    assert Verifier.parse(vkey).key_string() == vkey


def test_mangled_verifier_keys_are_refused() -> None:
    # After golang.org/x/mod TestNewVerifier: every proper substring, every byte + 1.
    b = PETER_VKEY
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if (i, j) != (0, len(b)):
                with pytest.raises(InvalidVerifierKeyError):
                    Verifier.parse(b[i:j])
    for i in range(len(b)):
        with pytest.raises(InvalidVerifierKeyError):
            Verifier.parse(b[:i] + chr(ord(b[i]) + 1) + b[i + 1 :])
    # Wrong length key and unknown algorithm, each with an adjusted key hash.
    with pytest.raises(InvalidVerifierKeyError):
        Verifier.parse("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==")
    with pytest.raises(InvalidVerifierKeyError):
        Verifier.parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


@pytest.mark.parametrize("name", ["", "a b", "a+b", "tab\there", "a\u3000b"])
def test_invalid_key_names(name: str) -> None:
    with pytest.raises(InvalidVerifierKeyError):
        Verifier(name, bytes(32))


# --- opening notes ---------------------------------------------------------------------------


def test_spec_note_verifies() -> None:
    opened = open_note(SPEC_NOTE, VerifierSet.parse([SPEC_VKEY]))
    assert opened == (SPEC_TEXT, ["example.com/foo"])
    text, signers = opened
    assert text == SPEC_TEXT
    assert signers == ["example.com/foo"]


def test_go_note_with_one_known_and_one_unknown_key() -> None:
    note = (GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()
    assert open_note(note, VerifierSet.parse([PETER_VKEY])).signers == ["PeterNeumann"]
    both = VerifierSet.parse([PETER_VKEY, ENOCH_VKEY])
    assert open_note(note, both).signers == ["PeterNeumann", "EnochRoot"]
    with pytest.raises(UnknownKeyError):
        open_note(note, VerifierSet())


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(UnknownKeyError):
        open_note(SPEC_NOTE, VerifierSet.parse([PETER_VKEY]))


def test_key_sharing_only_the_name_is_unknown() -> None:
    impostor = Verifier("example.com/foo", Verifier.parse(PETER_VKEY).public_key)
    with pytest.raises(UnknownKeyError):
        open_note(SPEC_NOTE, [impostor])


def test_every_flipped_byte_fails() -> None:
    verifiers = VerifierSet.parse([SPEC_VKEY])
    for i in range(len(SPEC_NOTE)):
        mutated = SPEC_NOTE[:i] + bytes([SPEC_NOTE[i] ^ 0x01]) + SPEC_NOTE[i + 1 :]
        with pytest.raises(NoteError):
            open_note(mutated, verifiers)
            pytest.fail(f"verified a note with byte {i} flipped")


def test_flipped_text_byte_is_a_bad_signature() -> None:
    mutated = SPEC_NOTE.replace(b"example message", b"exbmple message")
    with pytest.raises(BadSignatureError, match=r"example\.com/foo\+530d903a"):
        open_note(mutated, VerifierSet.parse([SPEC_VKEY]))


def test_flipped_signature_byte_is_a_bad_signature() -> None:
    name, b64 = SPEC_SIG[2:-1].split(" ")
    raw = bytearray(base64.b64decode(b64))
    raw[10] ^= 0x80  # inside the Ed25519 signature, after the 4-byte key ID
    line = f"\u2014 {name} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(BadSignatureError):
        open_note((SPEC_TEXT + "\n" + line).encode(), VerifierSet.parse([SPEC_VKEY]))


def test_a_bad_signature_from_a_known_key_rejects_the_whole_note() -> None:
    bad_enoch = ENOCH_SIG[:60] + "ABCD" + ENOCH_SIG[64:]
    note = (GO_TEXT + "\n" + PETER_SIG + bad_enoch).encode()
    assert open_note(note, VerifierSet.parse([PETER_VKEY])).signers == ["PeterNeumann"]
    with pytest.raises(BadSignatureError):
        open_note(note, VerifierSet.parse([PETER_VKEY, ENOCH_VKEY]))


@pytest.mark.parametrize(
    "note",
    [
        # golang.org/x/mod TestOpen badMsgs.
        GO_TEXT,
        GO_TEXT + "\n",
        GO_TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + GO_TEXT + "\n" + PETER_SIG,
        GO_TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Bad Name"),
        GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        # Others.
        GO_TEXT + "\n" + PETER_SIG.replace("\u2014", "-"),
        GO_TEXT + "\n" + PETER_SIG.replace("=\n", "\n"),
        GO_TEXT + "\n" + "\u2014 PeterNeumann AAAA\n",
        GO_TEXT + "\n" + PETER_SIG * 101,
    ],
)
def test_malformed_notes(note: str) -> None:
    with pytest.raises(MalformedNoteError):
        open_note(note.encode(), VerifierSet.parse([PETER_VKEY]))


def test_invalid_utf8_is_malformed() -> None:
    with pytest.raises(MalformedNoteError, match="UTF-8"):
        open_note(b"\xff" + (GO_TEXT + "\n" + PETER_SIG).encode(), [Verifier.parse(PETER_VKEY)])


def test_ambiguous_keys_are_refused() -> None:
    real = Verifier.parse(PETER_VKEY)
    twin = Verifier("PeterNeumann", Verifier.parse(ENOCH_VKEY).public_key)
    twin.key_id = real.key_id  # a (name, key ID) collision, which the spec warns about
    with pytest.raises(AmbiguousKeyError):
        VerifierSet([real, twin])
    assert len(VerifierSet([real, real])) == 1


# --- signing -----------------------------------------------------------------------------------


def test_sign_note_reproduces_the_go_vector(tmp_path: Path) -> None:
    signer = peter_signer(tmp_path)
    assert signer.verifier_key() == PETER_VKEY
    assert signer.key_id.hex() == "c74f20a3"
    assert sign_note(GO_TEXT, [signer]) == (GO_TEXT + "\n" + PETER_SIG).encode()


def test_generated_key_signs_verifiable_notes(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    signer = Ed25519FileSigner.generate(path, "onecard.example/audit")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    note = sign_note("hello\n", [signer])
    assert open_note(note, VerifierSet.parse([signer.verifier_key()])).text == "hello\n"
    reloaded = Ed25519FileSigner(path, "onecard.example/audit")
    assert reloaded.verifier_key() == signer.verifier_key()
    assert "PRIVATE" not in repr(signer)


def test_key_rotation_keeps_old_notes_verifiable(tmp_path: Path) -> None:
    name = "onecard.example/audit"
    old = Ed25519FileSigner.generate(tmp_path / "old.key", name)
    new = Ed25519FileSigner.generate(tmp_path / "new.key", name)
    assert old.key_id != new.key_id
    old_note = sign_note("size 1\n", [old])
    new_note = sign_note("size 2\n", [new])
    both = VerifierSet.parse([old.verifier_key(), new.verifier_key()])
    assert open_note(old_note, both).signers == [name]
    assert open_note(new_note, both).signers == [name]
    with pytest.raises(UnknownKeyError):
        open_note(old_note, VerifierSet.parse([new.verifier_key()]))


def test_note_signed_by_two_keys(tmp_path: Path) -> None:
    a = Ed25519FileSigner.generate(tmp_path / "a.key", "a.example")
    b = Ed25519FileSigner.generate(tmp_path / "b.key", "b.example")
    note = sign_note("two\n", [a, b])
    assert open_note(note, VerifierSet.parse([b.verifier_key()])).signers == ["b.example"]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "log.key"
    Ed25519FileSigner.generate(path, "log.example")
    path.chmod(mode)
    with pytest.raises(SigningKeyError, match="chmod 600"):
        Ed25519FileSigner(path, "log.example")


def test_generate_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    first = Ed25519FileSigner.generate(path, "log.example")
    with pytest.raises(SigningKeyError, match="already exists"):
        Ed25519FileSigner.generate(path, "log.example")
    assert Ed25519FileSigner(path, "log.example").verifier_key() == first.verifier_key()


def write_private(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def test_non_ed25519_and_garbage_key_files_are_refused(tmp_path: Path) -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(SigningKeyError, match="want an Ed25519 key"):
        Ed25519FileSigner(write_private(tmp_path / "ec.key", ec_pem), "log.example")
    with pytest.raises(SigningKeyError, match="raw seed"):
        Ed25519FileSigner(write_private(tmp_path / "short.key", b"x" * 31), "log.example")
    with pytest.raises(SigningKeyError, match="cannot open"):
        Ed25519FileSigner(tmp_path / "missing.key", "log.example")
    with pytest.raises(SigningKeyError, match="key name"):
        Ed25519FileSigner.generate(tmp_path / "bad.key", "bad name")
    assert not (tmp_path / "bad.key").exists()


def test_sign_note_refuses_bad_input(tmp_path: Path) -> None:
    signer = peter_signer(tmp_path)
    with pytest.raises(MalformedNoteError, match="newline"):
        sign_note("no newline", [signer])
    with pytest.raises(MalformedNoteError, match="control"):
        sign_note("bell\x07\n", [signer])
    with pytest.raises(MalformedNoteError, match="at least one"):
        sign_note("text\n", [])


def test_sign_note_refuses_a_signer_with_a_wrong_key_id(tmp_path: Path) -> None:
    real = peter_signer(tmp_path)

    class Misconfigured:
        name = "PeterNeumann"
        key_id = b"\x00\x00\x00\x00"

        def public_key_bytes(self) -> bytes:
            return real.public_key_bytes()

        def sign(self, message: bytes) -> bytes:
            return real.sign(message)

        def verifier_key(self) -> str:
            return real.verifier_key()

    signer: Signer = Misconfigured()
    with pytest.raises(SignerError, match="does not match"):
        sign_note(GO_TEXT, [signer])
