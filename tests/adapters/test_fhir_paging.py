"""The next-link rule of the FHIR adapter: followed only inside the source's base URL, rebased.

Unit tests of ``adapters.fhir.client._next_url``; the same rule against real servers (a link
back, a link to another host) is in tests/integration/test_health_faults.py, and sekmet's links
naming ``localhost:8090`` are followed through the rebase in tests/adapters/test_fhir.py.
"""

from __future__ import annotations

import pytest

from adapters.fhir.client import Source, _next_url
from gateway.errors import BackendUnavailable

SOURCE = Source("s", "https://fhir.example.org:8443/r4/fhir")


def _bundle(*links: tuple[str, str]) -> dict[str, object]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": r, "url": u} for r, u in links],
    }


@pytest.mark.parametrize(
    ("link", "followed"),
    [
        (
            "http://localhost:8090/r4/fhir/DiagnosticReport?patient=1&_offset=20",
            "https://fhir.example.org:8443/r4/fhir/DiagnosticReport?patient=1&_offset=20",
        ),
        (
            "https://fhir.example.org:8443/r4/fhir/Observation?_getpages=abc&_offset=5",
            "https://fhir.example.org:8443/r4/fhir/Observation?_getpages=abc&_offset=5",
        ),
        (
            # HAPI FHIR's paging links: the base URL itself, the page in the query.
            "http://localhost:8080/r4/fhir?_getpages=abc&_getpagesoffset=20&_count=20",
            "https://fhir.example.org:8443/r4/fhir?_getpages=abc&_getpagesoffset=20&_count=20",
        ),
        (
            "DiagnosticReport?patient=1&_offset=40",  # relative to the base
            "https://fhir.example.org:8443/r4/fhir/DiagnosticReport?patient=1&_offset=40",
        ),
    ],
)
def test_a_next_link_under_the_base_path_is_rebased_onto_the_configured_base(
    link: str, followed: str
) -> None:
    assert _next_url(SOURCE, _bundle(("self", "x"), ("next", link))) == followed


def test_the_last_page_has_no_next() -> None:
    assert _next_url(SOURCE, _bundle(("self", "https://fhir.example.org:8443/r4/fhir/X"))) is None
    assert _next_url(SOURCE, {"resourceType": "Bundle", "type": "searchset"}) is None


@pytest.mark.parametrize(
    "link",
    [
        "http://169.254.169.254/latest/meta-data/iam",  # another path on another host
        "https://fhir.example.org:8443/admin/fhir/DiagnosticReport",  # outside the base path
        "https://fhir.example.org:8443/r4/fhirx/DiagnosticReport",  # a prefix, not a parent
        "https://fhir.example.org:8443/r4/fhir/../../admin",  # climbs out
        # Percent-encoded dot segments: the HTTP client decodes and removes them, so they
        # climb out as well (/r4/fhir/%2e%2e/%2e%2e/admin is requested as /admin).
        "https://fhir.example.org:8443/r4/fhir/%2e%2e/%2e%2e/admin",
        "https://fhir.example.org:8443/r4/fhir/%2E%2E/admin",
        "https://fhir.example.org:8443/r4/fhir/.%2e/admin",
        "/r4/fhir/%2e%2e/%2e%2e/admin",
        # What servers behind the client make of a segment: Tomcat and Jetty (HAPI FHIR) drop
        # path parameters (..;/), some decode an encoded slash or take a backslash as one.
        "https://fhir.example.org:8443/r4/fhir/..;/..;/admin",
        "https://fhir.example.org:8443/r4/fhir/..%2f..%2fadmin",
        "https://fhir.example.org:8443/r4/fhir/..%5c..%5cadmin",
        "file:///r4/fhir/etc/passwd",
        "gopher://fhir.example.org/r4/fhir/x",
    ],
)
def test_a_next_link_outside_the_base_is_a_malformed_answer(link: str) -> None:
    with pytest.raises(BackendUnavailable) as info:
        _next_url(SOURCE, _bundle(("next", link)))
    assert info.value.reason == "backend_malformed"
