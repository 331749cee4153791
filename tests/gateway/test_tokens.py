import datetime as dt

import pytest

from gateway.errors import BasisRefused
from gateway.tokens import PREFIX, CardTokens
from tests.gateway.fakes import FakeLedger

CARD = "11010519491231002X"
OTHER = "110101199003074477"
KEY = bytes(range(32))


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tokens(clock: Clock) -> CardTokens:
    return CardTokens(KEY, FakeLedger(), ttl=dt.timedelta(seconds=60), clock=clock)


@pytest.fixture
def ledger() -> FakeLedger:
    return FakeLedger()


async def test_a_token_holds_until_an_exchange_redeems_it(ledger: FakeLedger, clock: Clock) -> None:
    tokens = CardTokens(KEY, ledger, clock=clock)
    issued = tokens.issue(CARD)
    assert issued.token.startswith(PREFIX)
    assert CARD not in issued.token
    use = await tokens.check(issued.token, CARD)
    assert len(use.token_id) == 16
    assert use.reference == f"token:{use.token_id.hex()}"
    assert use.expires_at == int(issued.expires_at.timestamp())
    assert await tokens.check(issued.token, CARD) == use  # checking does not use it up
    ledger.redeemed.add(use.token_id)
    with pytest.raises(BasisRefused) as info:
        await tokens.check(issued.token, CARD)
    assert info.value.reason == "token_replayed"


async def test_a_token_for_another_card_is_refused(tokens: CardTokens) -> None:
    issued = tokens.issue(CARD)
    with pytest.raises(BasisRefused) as info:
        await tokens.check(issued.token, OTHER)
    assert info.value.reason == "token_wrong_card"
    # The token still holds for its own card.
    await tokens.check(issued.token, CARD)


async def test_a_token_expires_after_its_ttl(tokens: CardTokens, clock: Clock) -> None:
    issued = tokens.issue(CARD)
    assert issued.expires_at == clock.now + dt.timedelta(seconds=60)
    clock.now += dt.timedelta(seconds=59)
    fresh = tokens.issue(CARD)
    await tokens.check(fresh.token, CARD)
    clock.now += dt.timedelta(seconds=1)
    with pytest.raises(BasisRefused) as info:
        await tokens.check(issued.token, CARD)
    assert info.value.reason == "token_expired"


async def test_a_token_under_another_key_is_forged(clock: Clock) -> None:
    other_gateway = CardTokens(bytes(32), FakeLedger(), clock=clock)
    forged = other_gateway.issue(CARD).token
    mine = CardTokens(KEY, FakeLedger(), clock=clock)
    with pytest.raises(BasisRefused) as info:
        await mine.check(forged, CARD)
    assert info.value.reason == "token_forged"


@pytest.mark.parametrize("position", [4, 10, 40, 80, -1])
async def test_any_changed_character_makes_a_token_forged_or_malformed(
    tokens: CardTokens, position: int
) -> None:
    token = tokens.issue(CARD).token
    chars = list(token)
    chars[position] = "A" if chars[position] != "A" else "B"
    with pytest.raises(BasisRefused) as info:
        await tokens.check("".join(chars), CARD)
    assert info.value.reason in {"token_forged", "token_malformed"}


@pytest.mark.parametrize("bad", ["", "oc1.", "oc2.AAAA", "oc1.!!!!", "oc1." + "A" * 300, "x" * 10])
async def test_malformed_tokens_are_refused(tokens: CardTokens, bad: str) -> None:
    with pytest.raises(BasisRefused) as info:
        await tokens.check(bad, CARD)
    assert info.value.reason == "token_malformed"
