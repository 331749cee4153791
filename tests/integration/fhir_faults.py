"""A FHIR server that misbehaves on demand: a loopback proxy in front of the reference server.

Every request is forwarded to the reference FHIR server unchanged (its Bundle links name the
reference server's own address, which the adapter must rebase), except searches of
``DiagnosticReport`` while ``fault`` is set; then it answers as that fault says. Its answers
carry ``SERVER_TEXT``, which must never reach a caller.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from adapters.fhir import start_reference_fhir_server

SERVER_TEXT = "SERVER-DIAGNOSTICS patient 110101199003074477 in ward 7"


class FaultyFhir:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream  # the reference server's base URL, .../fhir
        self.fault = ""
        self.url = ""
        self.searches = 0
        self.session: aiohttp.ClientSession | None = None  # to the reference server, reused
        self.released = asyncio.Event()  # ends every hanging answer (set when the server stops)

    async def handle(self, request: web.Request) -> web.Response:
        tail = request.match_info["tail"]
        if tail == "DiagnosticReport":
            self.searches += 1
            if self.fault:
                return await self._faulty(request)
        if self.session is None:
            self.session = aiohttp.ClientSession()
        async with self.session.get(
            f"{self.upstream}/{tail}", params=list(request.query.items())
        ) as answer:
            return web.Response(
                body=await answer.read(), status=answer.status, content_type="application/fhir+json"
            )

    async def _faulty(self, request: web.Request) -> web.Response:
        here = f"{self.url}/DiagnosticReport?{request.query_string}"
        match self.fault:
            case "invalid_json":
                return _answer(
                    200, f'{{"resourceType": "Bundle", "type": "searchset", {SERVER_TEXT}'
                )
            case "invalid_fhir":
                resource = {
                    "resourceType": "DiagnosticReport",
                    "id": "bad",
                    "status": "final",
                    "code": {"text": SERVER_TEXT},
                    "issued": "last tuesday",
                    "subject": {"reference": "Patient/x"},
                }
                return _bundle([{"resource": resource}], [])
            case "operation_outcome":
                return _answer(500, json.dumps(_outcome()))
            case "outcome_instead_of_bundle":
                return _answer(200, json.dumps(_outcome()))
            case "hang":
                await self.released.wait()
                return _bundle([], [])
            case "paging_loop":
                return _bundle([], [{"relation": "next", "url": here}])
            case "wrong_person":  # ignores ?patient= and answers someone else's report
                resource = {
                    "resourceType": "DiagnosticReport",
                    "id": "theirs",
                    "status": "final",
                    "code": {"text": SERVER_TEXT},
                    "subject": {"reference": "Patient/someone-else"},
                }
                return _bundle([{"resource": resource}], [])
            case "next_outside_base":
                evil = "http://169.254.169.254/latest/meta-data/iam"
                return _bundle([], [{"relation": "next", "url": evil}])
        raise AssertionError(self.fault)


def _outcome() -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "exception", "diagnostics": SERVER_TEXT}],
    }


def _bundle(entries: list[dict[str, Any]], links: list[dict[str, str]]) -> web.Response:
    bundle = {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries}
    return _answer(200, json.dumps(bundle))


def _answer(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="application/fhir+json")


@asynccontextmanager
async def faulty_fhir() -> AsyncIterator[FaultyFhir]:
    """A ``FaultyFhir`` on 127.0.0.1 in front of a fresh reference FHIR server."""
    reference = await start_reference_fhir_server()
    server = FaultyFhir(reference.url)
    app = web.Application()
    app.router.add_get("/fhir/{tail:.+}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        server.url = f"http://127.0.0.1:{runner.addresses[0][1]}/fhir"
        yield server
    finally:
        server.released.set()
        await runner.cleanup()
        if server.session is not None:
            await server.session.close()
        await reference.close()
