import pytest

from gateway import cardno
from gateway.errors import MalformedCardNumber


@pytest.mark.parametrize(
    "number", ["11010519491231002X", "110101199003074477", "11010519491231002x"]
)
def test_valid_numbers_normalize_to_upper_case(number: str) -> None:
    assert cardno.normalize(number) == number.upper()


@pytest.mark.parametrize(
    ("number", "fragment"),
    [
        ("440305198512120029", "check character"),  # should end in X
        ("110101199003074478", "check character"),
        ("11010519491231002", "18 characters"),
        ("", "required"),
        ("1101051949123100XX", "17 digits"),
        ("11010519491331002X", "birth date"),  # month 13
        ("\uff11" * 17 + "X", "17 digits"),  # full-width digits pass str.isdigit()
    ],
)
def test_malformed_numbers_are_refused_without_echoing_them(number: str, fragment: str) -> None:
    with pytest.raises(MalformedCardNumber) as info:
        cardno.normalize(number)
    assert fragment in info.value.message
    if number:
        assert number not in info.value.message


def test_check_character_matches_gb11643_examples() -> None:
    assert cardno.check_character("11010519491231002") == "X"
    assert cardno.check_character("44030519851212002") == "X"
    with pytest.raises(ValueError, match="17 ASCII digits"):
        cardno.check_character("123")
