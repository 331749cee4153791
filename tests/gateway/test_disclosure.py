from gateway.api.onecard.v1 import card_pb2, insurance_pb2
from gateway.disclosure import disclose, unknown_paths


def _status() -> insurance_pb2.GetInsuranceStatusResponse:
    scheme = insurance_pb2.InsuranceScheme(
        insutype="310",
        type_name="employee basic medical insurance",
        status=insurance_pb2.SCHEME_STATUS_ACTIVE,
        start_date="2015-03-01",
        insured_district="110105",
        employer_name="Demo Works Ltd",
        balance="1234.50",
    )
    return insurance_pb2.GetInsuranceStatusResponse(schemes=[scheme, scheme])


def test_only_named_fields_of_every_repeated_element_survive() -> None:
    response = _status()
    disclose(response, frozenset({"schemes.insutype", "schemes.status"}))
    assert len(response.schemes) == 2
    for scheme in response.schemes:
        assert scheme.insutype == "310"
        assert scheme.status == insurance_pb2.SCHEME_STATUS_ACTIVE
        assert scheme.employer_name == ""
        assert scheme.balance == ""
        assert scheme.start_date == ""


def test_naming_a_message_field_keeps_it_whole() -> None:
    response = _status()
    disclose(response, frozenset({"schemes"}))
    assert response.schemes[0].balance == "1234.50"


def test_nothing_allowed_means_nothing_out() -> None:
    response = card_pb2.VerifyCardResponse(
        card_holder_valid=True, masked_name="张*", issuing_district="110105"
    )
    disclose(response, frozenset())
    assert response.ByteSize() == 0


def test_unknown_paths_are_reported() -> None:
    descriptor = insurance_pb2.GetInsuranceStatusResponse.DESCRIPTOR
    paths = ["schemes.status", "schemes.nope", "balance", "schemes.status.deeper"]
    assert unknown_paths(descriptor, paths) == ["schemes.nope", "balance", "schemes.status.deeper"]
