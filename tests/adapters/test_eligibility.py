"""The eligibility adapter's parts, one at a time: tokens, key files, registers, settings."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest
from eligibility_api import server as cal_itp
from jwcrypto import jwk

from adapters.eligibility import tokens
from adapters.eligibility.keys import (
    KeyFileError,
    PartyKeys,
    load_private_key,
    load_public_key,
    reference_pair,
)
from adapters.eligibility.registers import SENIOR_AGE, Registers, age_on
from adapters.eligibility.wiring import wire_backend
from adapters.errors import Failure
from adapters.social_insurance.seed import FIXED_ID_NUMBERS, Population
from gateway.config import BackendSettings, ConfigError

NOW = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)
PROFILE = tokens.Profile(server_issuer="server")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[PartyKeys, PartyKeys]:
    return reference_pair(tmp_path_factory.mktemp("keys"))


def _answer(
    server: PartyKeys, asked: tokens.Request, profile: tokens.Profile = PROFILE, **claims: Any
) -> str:
    payload = {"jti": asked.jti, "iss": "server", "iat": int(NOW.timestamp())}
    payload["eligibility"] = ["senior"]
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return tokens.seal(payload, server, profile)


def _ask(gateway: PartyKeys, profile: tokens.Profile = PROFILE) -> tokens.Request:
    return tokens.request(
        sub="11010519491231002X", name="张秀英", types=["senior"], agency="t",
        keys=gateway, profile=profile, now=NOW,
    )  # fmt: skip


def _open(gateway: PartyKeys, token: str, asked: tokens.Request) -> tokens.Answer:
    return tokens.open_answer(
        token, asked=asked, types=["senior"], keys=gateway, profile=PROFILE, now=NOW
    )


# -- tokens --------------------------------------------------------------------------------------


def test_a_request_opens_with_eligibility_api_and_carries_the_protocol_claims(
    pair: tuple[PartyKeys, PartyKeys],
) -> None:
    gateway, server = pair
    asked = _ask(gateway)

    payload = cal_itp.get_token_payload(
        asked.token, "RSA-OAEP", "A256CBC-HS512",
        server.own.export_to_pem(private_key=True, password=None), "RS256",
        server.peer.export_to_pem(private_key=False, password=None),
    )  # fmt: skip

    assert payload == {
        "jti": asked.jti, "iss": "onecard-gateway", "iat": int(NOW.timestamp()), "agency": "t",
        "eligibility": ["senior"], "sub": "11010519491231002X", "name": "张秀英",
    }  # fmt: skip
    header = json.loads(base64.urlsafe_b64decode(asked.token.split(".")[0] + "=="))
    assert header == {"typ": "JWE", "alg": "RSA-OAEP", "enc": "A256CBC-HS512"}


def test_an_answer_made_by_eligibility_api_opens(pair: tuple[PartyKeys, PartyKeys]) -> None:
    gateway, server = pair
    asked = _ask(gateway)
    payload = {"jti": asked.jti, "iss": "server", "iat": int(NOW.timestamp()), "eligibility": []}
    token = cal_itp.make_token(
        payload, "RS256", server.own.export_to_pem(private_key=True, password=None),
        "RSA-OAEP", "A256CBC-HS512", server.peer.export_to_pem(private_key=False, password=None),
    )  # fmt: skip

    answer = _open(gateway, token, asked)

    assert (answer.eligibility, answer.error, answer.issued_at) == (frozenset(), False, NOW)


def _flip(token: str, part: int) -> str:
    parts = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(parts[part] + "=" * (-len(parts[part]) % 4)))
    raw[len(raw) // 2] ^= 0x01
    parts[part] = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    return ".".join(parts)


@pytest.mark.parametrize(
    ("make", "check", "failure"),
    [
        (lambda g, s, a: "garbage", "not_jwe", Failure.MALFORMED),
        (lambda g, s, a: _answer(s, a)[:-20], "undecryptable", Failure.MALFORMED),
        (lambda g, s, a: _flip(_answer(s, a), 3), "undecryptable", Failure.MALFORMED),
        (lambda g, s, a: _flip(_answer(s, a), 4), "undecryptable", Failure.MALFORMED),
        (
            lambda g, s, a: _answer(PartyKeys(g.own, s.peer), a),  # signed with the wrong key
            "bad_signature",
            Failure.UNVERIFIED,
        ),
        (
            lambda g, s, a: tokens.seal({"jti": a.jti}, PartyKeys(s.own, g.peer), PROFILE),
            "undecryptable",  # encrypted to the server's key, not the gateway's
            Failure.MALFORMED,
        ),
        (lambda g, s, a: _answer(s, a, jti="another"), "wrong_jti", Failure.UNVERIFIED),
        (lambda g, s, a: _answer(s, a, iss="someone"), "wrong_issuer", Failure.UNVERIFIED),
        (
            lambda g, s, a: _answer(s, a, iat=int(NOW.timestamp()) - 361),
            "stale",
            Failure.UNVERIFIED,
        ),
        (lambda g, s, a: _answer(s, a, iat=int(NOW.timestamp()) + 61), "stale", Failure.UNVERIFIED),
        (lambda g, s, a: _answer(s, a, exp=int(NOW.timestamp()) - 61), "stale", Failure.UNVERIFIED),
        (lambda g, s, a: _answer(s, a, iat="now"), "bad_claims", Failure.MALFORMED),
        # Past datetime's last year (9999): a signed answer must not raise ValueError.
        (lambda g, s, a: _answer(s, a, exp=2**39), "bad_claims", Failure.MALFORMED),
        (lambda g, s, a: _answer(s, a, iat=2**39), "bad_claims", Failure.MALFORMED),
        (lambda g, s, a: _answer(s, a, eligibility="senior"), "bad_claims", Failure.MALFORMED),
        (lambda g, s, a: _answer(s, a, jti=None), "bad_claims", Failure.MALFORMED),
        (
            lambda g, s, a: _answer(s, a, eligibility=["senior", "student"]),
            "unasked_type",
            Failure.MALFORMED,
        ),
        (
            lambda g, s, a: _answer(s, a, tokens.Profile(jwe_enc="A128GCM")),
            "undecryptable",  # an algorithm other than the profile's
            Failure.MALFORMED,
        ),
        (
            lambda g, s, a: _answer(s, a, tokens.Profile(jws_alg="PS256")),
            "bad_signature",
            Failure.UNVERIFIED,
        ),
    ],
)
def test_an_answer_failing_a_check_is_refused_naming_the_check(
    pair: tuple[PartyKeys, PartyKeys], make: Any, check: str, failure: Failure
) -> None:
    gateway, server = pair
    asked = _ask(gateway)
    with pytest.raises(tokens.AnswerRefused) as info:
        _open(gateway, make(gateway, server, asked), asked)
    assert (info.value.check, info.value.failure) == (check, failure)


def test_answers_within_the_bounds_open(pair: tuple[PartyKeys, PartyKeys]) -> None:
    gateway, server = pair
    asked = _ask(gateway)
    for iat in (int(NOW.timestamp()) - 359, int(NOW.timestamp()) + 59):
        assert _open(gateway, _answer(server, asked, iat=iat), asked).eligibility == {"senior"}
    error = _open(gateway, _answer(server, asked, eligibility=None, error={"sub": "x"}), asked)
    assert error.error is True
    later = _open(gateway, _answer(server, asked, exp=int(NOW.timestamp()) + 90), asked)
    assert later.expires_at == NOW + dt.timedelta(seconds=90)


@pytest.mark.parametrize(
    "given",
    [
        {"jws_alg": "HS256"},
        {"jws_alg": "none"},
        {"jwe_alg": "RSA1_5"},
        {"jwe_enc": "A128CBC"},
        {"max_age_s": 0},
        {"clock_skew_s": -1},
    ],
)
def test_a_profile_refuses_unsafe_or_unknown_algorithms_and_bounds(given: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(given)).split("_")[0]):
        tokens.Profile(**given)


# -- key files ---------------------------------------------------------------------------------


def test_reference_keys_are_made_once_private_and_reused(tmp_path: Path) -> None:
    first_gateway, first_server = reference_pair(tmp_path)
    again_gateway, _ = reference_pair(tmp_path)

    assert first_gateway.own.thumbprint() == again_gateway.own.thumbprint()
    assert first_server.peer.thumbprint() == first_gateway.own.thumbprint()
    assert first_gateway.peer.thumbprint() == first_server.own.thumbprint()
    for path in tmp_path.glob("*.pem"):
        mode = path.stat().st_mode & 0o777
        assert mode == (0o644 if path.name.endswith(".pub.pem") else 0o600), path.name
    assert not first_gateway.peer.has_private


def test_key_files_are_refused_with_what_to_do(tmp_path: Path) -> None:
    reference_pair(tmp_path)
    private = tmp_path / "eligibility-gateway.pem"
    public = tmp_path / "eligibility-gateway.pub.pem"

    with pytest.raises(KeyFileError, match="holds a private key"):
        load_public_key(private)
    with pytest.raises(KeyFileError, match="holds a public key"):
        load_private_key(public)
    os.chmod(private, 0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_private_key(private)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN NOTHING-----\nsecret-ish\n")
    with pytest.raises(KeyFileError, match="not a PEM key") as info:
        load_public_key(garbage)
    assert "secret-ish" not in str(info.value)
    with pytest.raises(KeyFileError, match="no such key file"):
        load_public_key(tmp_path / "absent.pem")


def test_a_jwk_file_is_read_as_well_as_pem(tmp_path: Path) -> None:
    key = jwk.JWK.generate(kty="RSA", size=2048)
    path = tmp_path / "server.jwk"
    path.write_text(key.export_public())
    assert load_public_key(path).thumbprint() == key.thumbprint()


# -- registers -----------------------------------------------------------------------------------


def test_registers_follow_the_population_and_the_day() -> None:
    population = Population.default()
    today = dt.date(2026, 11, 25)
    registers = Registers.build(population, today)

    assert registers == Registers.build(population, today)  # deterministic
    assert set(registers.disabled) | set(registers.students) <= {p.id_number for p in population}
    assert not set(FIXED_ID_NUMBERS) & (set(registers.disabled) | set(registers.students))
    students = list(registers.students.values())
    assert any(s.valid_on(today) for s in students)
    assert any(s.valid_until < today for s in students)
    assert all(s.valid_from < s.valid_until for s in students)
    for person in population:
        asked = registers.qualifies(person.id_number, person.name, ["senior"], today)
        assert (asked == ["senior"]) == (age_on(person.birth_date, today) >= SENIOR_AGE)


def test_a_person_qualifies_only_under_their_own_name() -> None:
    registers = Registers.build(Population.default(), dt.date(2026, 11, 25))
    day = dt.date(2026, 11, 25)
    senior = FIXED_ID_NUMBERS[0]
    assert registers.qualifies(senior, "张秀英", ["senior", "student"], day) == ["senior"]
    assert registers.qualifies(senior, "李明", ["senior"], day) == []
    assert registers.qualifies("110105194912310038", "张秀英", ["senior"], day) == []
    assert registers.qualifies(senior, "张秀英", ["courtesy_card"], day) == []


def test_a_senior_turns_senior_on_the_birthday() -> None:
    birth = dt.date(1966, 11, 25)
    assert age_on(birth, dt.date(2026, 11, 24)) == SENIOR_AGE - 1
    assert age_on(birth, dt.date(2026, 11, 25)) == SENIOR_AGE


# -- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "credentials", "message"),
    [
        ("http://127.0.0.1:9/verify", {}, "signing_key and server_key needed with a url"),
        ("http://127.0.0.1:9/verify", {"signing_key": "x.pem"}, "server_key needed with a url"),
        (None, {"signing_key": "x.pem"}, "are for a real server"),
        (None, {"jws_alg": "HS256"}, "jws_alg 'HS256' is not one of"),
        (None, {"colour": "blue"}, "credentials.colour: Extra inputs are not permitted"),
        (None, {"answer_ttl_s": "0"}, "credentials.answer_ttl_s"),
    ],
)
async def test_settings_that_cannot_work_are_refused_with_where_and_why(
    tmp_path: Path, url: str | None, credentials: dict[str, str], message: str
) -> None:
    settings = BackendSettings.model_validate(
        {"url": url, "credentials": credentials, "keys_dir": tmp_path}
    )
    with pytest.raises(ConfigError, match=r"backends\.eligibility") as info:
        await wire_backend(settings)
    assert message in str(info.value)


async def test_a_real_server_is_wired_from_key_files(tmp_path: Path) -> None:
    reference_pair(tmp_path)
    settings = BackendSettings.model_validate(
        {
            "url": "http://127.0.0.1:9/verify",
            "credentials": {
                "signing_key": str(tmp_path / "eligibility-gateway.pem"),
                "server_key": str(tmp_path / "eligibility-reference-server.pub.pem"),
                "api_key": "k",
            },
        }
    )
    wired = await wire_backend(settings)
    await wired.close()
    assert wired.url == "http://127.0.0.1:9/verify"
    swapped = BackendSettings.model_validate(
        {
            "url": "http://127.0.0.1:9/verify",
            "credentials": {
                "signing_key": str(tmp_path / "eligibility-gateway.pem"),
                "server_key": str(tmp_path / "eligibility-gateway.pem"),  # a private key
            },
        }
    )
    with pytest.raises(ConfigError, match="holds a private key"):
        await wire_backend(swapped)
