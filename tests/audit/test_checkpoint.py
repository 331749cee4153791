"""C2SP tlog-checkpoint bodies: strict parsing, signing and opening."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from gateway.audit.checkpoint import (
    Checkpoint,
    MalformedCheckpointError,
    OriginMismatchError,
    open_checkpoint,
    sign_checkpoint,
)
from gateway.audit.note import BadSignatureError, UnknownKeyError, Verifier, VerifierSet
from gateway.audit.rfc6962 import EMPTY_ROOT
from gateway.audit.signer import Ed25519FileSigner

# Source: C2SP tlog-checkpoint.md, the example checkpoint body.
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"

# Source: transparency-dev/formats log/note_test.go, TestSumDBNoteParsing: a real
# checkpoint of the Go checksum database and its published verifier key.
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n6476701\nmb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n\n"
    "\u2014 sum.golang.org Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4"
    "nPRYfvimWEPWL+o3GeoWwOoAw=\n"
).encode()

ROOT = base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")


def test_spec_body_parses_and_round_trips() -> None:
    cp = Checkpoint.parse(SPEC_BODY)
    assert cp == Checkpoint("example.com/behind-the-sofa", 20852163, ROOT)
    assert cp.to_text() == SPEC_BODY


def test_empty_tree_and_extension_lines() -> None:
    empty = Checkpoint("log.example", 0, EMPTY_ROOT)
    assert empty.to_text() == "log.example\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    extended = Checkpoint("log.example", 5, ROOT, ("ext one", "ext two"))
    assert Checkpoint.parse(extended.to_text()) == extended
    assert extended.to_text().endswith("\next one\next two\n")


def test_real_sumdb_checkpoint_opens() -> None:
    cp = open_checkpoint(SUMDB_NOTE, VerifierSet.parse([SUMDB_VKEY]), "go.sum database tree")
    assert (cp.origin, cp.size) == ("go.sum database tree", 6476701)
    assert base64.b64encode(cp.root_hash) == b"mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk="


def test_real_sumdb_checkpoint_for_another_origin_is_refused() -> None:
    with pytest.raises(OriginMismatchError) as info:
        open_checkpoint(SUMDB_NOTE, [Verifier.parse(SUMDB_VKEY)], "Go rocks but wrong ID")
    assert info.value.found == "go.sum database tree"


def test_real_sumdb_checkpoint_with_altered_size_is_refused() -> None:
    altered = SUMDB_NOTE.replace(b"6476701", b"6476702")
    with pytest.raises(BadSignatureError):
        open_checkpoint(altered, [Verifier.parse(SUMDB_VKEY)], "go.sum database tree")


def test_sign_and_open(tmp_path: Path) -> None:
    signer = Ed25519FileSigner.generate(tmp_path / "log.key", "onecard.example/audit")
    cp = Checkpoint("onecard.example/audit", 42, ROOT)
    note = sign_checkpoint(cp, signer)
    assert note.startswith((cp.to_text() + "\n\u2014 onecard.example/audit ").encode())
    verifiers = VerifierSet.parse([signer.verifier_key()])
    assert open_checkpoint(note, verifiers, "onecard.example/audit") == cp
    with pytest.raises(UnknownKeyError):
        open_checkpoint(note, VerifierSet.parse([SUMDB_VKEY]), "onecard.example/audit")


ROOT_B64 = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f"log\n0123\n{ROOT_B64}\n", "invalid log size"),  # leading zero
        (f"log\n00\n{ROOT_B64}\n", "invalid log size"),
        (f"log\n-34\n{ROOT_B64}\n", "invalid log size"),  # negative
        (f"log\n+34\n{ROOT_B64}\n", "invalid log size"),
        (f"log\n 34\n{ROOT_B64}\n", "invalid log size"),
        (f"log\nbananas\n{ROOT_B64}\n", "invalid log size"),
        (f"log\n\u0663\n{ROOT_B64}\n", "invalid log size"),  # Arabic-Indic digit three
        (f"log\n3438945738945739845734895735\n{ROOT_B64}\n", "invalid log size"),
        (f"log\n123\n{ROOT_B64}", "newline"),  # missing final newline
        ("log\n123\n", "three lines"),
        ("Head\n9944\n", "three lines"),
        (f"\n9944\n{ROOT_B64}\n", "invalid origin"),
        ("log\n123\nThisIsn'tBase64\n", "invalid root hash"),
        (f"log\n123\n{ROOT_B64.rstrip('=')}\n", "invalid root hash"),  # no padding
        (f"log\n123\n{ROOT_B64[:-2]}Z=\n", "invalid root hash"),  # non-canonical
        (f"log\n123\n{base64.b64encode(ROOT[:31]).decode()}\n", "31 bytes, want 32"),
        ("log\n123\nYmFuYW5hcw==\n", "7 bytes, want 32"),
        (f"log\n123\n{ROOT_B64}\n\n", "invalid extension line"),  # empty extension line
        (f"log\r\n123\n{ROOT_B64}\n", "invalid"),
    ],
)
def test_malformed_bodies(body: str, message: str) -> None:
    with pytest.raises(MalformedCheckpointError, match=f"malformed checkpoint: .*{message}"):
        Checkpoint.parse(body)


def test_constructor_validates() -> None:
    with pytest.raises(MalformedCheckpointError, match="invalid log size"):
        Checkpoint("log", -1, ROOT)
    with pytest.raises(MalformedCheckpointError, match="invalid origin"):
        Checkpoint("two\nlines", 1, ROOT)
    with pytest.raises(ValueError, match="33 bytes"):
        Checkpoint("log", 1, ROOT + b"\x00")
