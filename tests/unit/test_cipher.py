"""Whether a stored value is sealed follows from its shape alone: a JSON
object with the one key `sealed`. Anything else, however close, is a value
as given."""

import pytest

from chalicelib.personal.cipher import is_sealed


def test_an_object_with_only_sealed_is_sealed():
    assert is_sealed({"sealed": "AAAA"})


@pytest.mark.parametrize("value", [
    "sealed", '{"sealed": "AAAA"}', {"sealed": "AAAA", "by": "us"}, {"seal": "AAAA"}, {}, ["sealed"], None,
    ("sealed",),
])
def test_nothing_else_is_sealed_however_close(value):
    assert not is_sealed(value)
