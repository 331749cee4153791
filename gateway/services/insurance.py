"""InsuranceService: insurance status from the social insurance back end."""

from __future__ import annotations

from typing import Any

import grpc

from gateway.api.onecard.v1 import insurance_pb2, insurance_pb2_grpc
from gateway.cards import ResolvedCard
from gateway.context import current_call
from gateway.pipeline import Ask, Pipeline
from gateway.ports import InsuranceBackend, InsuranceScheme, InsuranceStatus
from gateway.services import _convert

_STATUS = {
    InsuranceStatus.ACTIVE: insurance_pb2.SCHEME_STATUS_ACTIVE,
    InsuranceStatus.SUSPENDED: insurance_pb2.SCHEME_STATUS_SUSPENDED,
    InsuranceStatus.TERMINATED: insurance_pb2.SCHEME_STATUS_TERMINATED,
}

# insutype codes of the national medical insurance code tables.
SCHEME_NAMES = {
    "310": "employee basic medical insurance",
    "320": "civil servant medical subsidy",
    "330": "large-amount medical expense subsidy",
    "340": "retired cadre medical security",
    "390": "urban and rural resident basic medical insurance",
    "392": "urban and rural resident critical illness insurance",
    "410": "long-term care insurance",
    "510": "maternity insurance",
}


class InsuranceService(insurance_pb2_grpc.InsuranceServiceServicer):
    """Implements onecard.v1.InsuranceService."""

    def __init__(self, pipeline: Pipeline, backend: InsuranceBackend, *, timeout: float) -> None:
        self._pipeline = pipeline
        self._backend = backend
        self._timeout = timeout

    async def GetInsuranceStatus(
        self,
        request: insurance_pb2.GetInsuranceStatusRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> insurance_pb2.GetInsuranceStatusResponse:
        ask = Ask(
            action="GetInsuranceStatus",
            card_number=request.card.card_number,
            purpose=_convert.purpose(request.purpose),
            basis=_convert.basis_claim(request.basis),
            backend="social_insurance",
            category="insurance",
        )

        async def fetch(card: ResolvedCard) -> insurance_pb2.GetInsuranceStatusResponse:
            person = await self._backend.person_insurance(card.card_number, timeout=self._timeout)
            return insurance_pb2.GetInsuranceStatusResponse(
                schemes=[_scheme(s) for s in person.schemes]
            )

        return await self._pipeline.run(current_call(), ask, fetch)


def _scheme(s: InsuranceScheme) -> insurance_pb2.InsuranceScheme:
    return insurance_pb2.InsuranceScheme(
        insutype=s.insutype,
        type_name=SCHEME_NAMES.get(s.insutype, f"scheme {s.insutype}"),
        status=_STATUS[s.status],
        start_date=s.start_date.isoformat() if s.start_date else "",
        pause_date=s.pause_date.isoformat() if s.pause_date else "",
        insured_district=s.insured_district,
        employer_name=s.employer_name or "",
        balance=str(s.balance) if s.balance is not None else "",
    )
