"""A client nobody here wrote: ``buf curl`` with server reflection and an org's certificate."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from adapters.social_insurance.seed import Population
from gateway.bootstrap import Gateway
from gateway.ports import CardStatus

# A protocol or transport test: what it checks does not depend on the store, so it runs on
# SQLite only (every store-dependent path runs on both stores in the other modules).
pytestmark = [pytest.mark.integration, pytest.mark.store_independent]
BUF = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "buf"


async def _buf_curl(gateway: Gateway, org_id: str, method: str, data: dict[str, object]) -> dict:
    if not BUF.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{BUF} is missing: ./dev test installs it with npm ci")
        pytest.skip("buf is not installed (./dev test installs it)")
    pki = gateway.pki
    proc = await asyncio.create_subprocess_exec(
        str(BUF), "curl", "--protocol", "grpc",
        "--cacert", str(pki.ca_cert),
        "--cert", str(pki.client_cert(org_id)), "--key", str(pki.client_key(org_id)),
        "--data", json.dumps(data),
        f"https://{gateway.target}/{method}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    result: dict = json.loads(out)
    return result


async def test_buf_curl_gets_an_insurance_status(gateway: Gateway, population: Population) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    card = {"card_number": person.id_number}
    issued = await _buf_curl(
        gateway,
        "app-ecard-001",
        "onecard.v1.CardService/IssueCardToken",
        {"card": card, "purpose": "PURPOSE_PATRQT"},
    )
    status = await _buf_curl(
        gateway,
        "hosp-bj-001",
        "onecard.v1.InsuranceService/GetInsuranceStatus",
        {
            "card": card,
            "purpose": "PURPOSE_COVERAGE",
            "basis": {"card_present": {"token": issued["token"]}},
        },
    )
    assert [s["insutype"] for s in status["schemes"]] == [s.insutype for s in person.schemes]
    assert status["decision"]["policyIds"] == ["hospital-reads-insurance-status"]
