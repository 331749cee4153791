"""Review of issue 17: a redeemed token must stay refused while an exchange that verified it
before its expiry can still be committing.

The stores pruned ``redeemed_tokens`` rows as soon as ``expires_at < now`` (each host's clock,
once a minute, the first time in a process's first batch). An exchange verifies the token's
expiry when it starts and redeems it only in its audit batch, up to ``request_budget_s`` (and,
between hosts, the clocks' skew) later: a copy of the token verified just before its expiry
then found its row pruned, redeemed it again, and was released a second time.
"""

from __future__ import annotations

import dataclasses
import time

from gateway.audit.log import Redemption, TokenSpend
from gateway.audit.signer import Ed25519FileSigner
from tests.gateway.store.test_sqlite_audit import make_record
from tests.postgres import Place

TOKEN = b"r" * 16


async def test_a_token_that_just_expired_is_not_released_twice(place: Place) -> None:
    signer = Ed25519FileSigner.generate(place.data_dir / "log.key", "test.local/log")
    store = await place.open(signer)
    expired = int(time.time()) - 2  # both copies were verified before this; their batches after
    try:
        first, second = [
            await store.audit_log.append(
                record,
                Redemption(
                    TokenSpend(TOKEN, expired),
                    dataclasses.replace(record, outcome="PERMISSION_DENIED", released_sha256=""),
                ),
            )
            for record in (make_record(0), make_record(1))
        ]
    finally:
        await store.close()
    assert not first.replayed
    assert second.replayed, "the same token was redeemed, and released, twice"
