"""The one validator: bounds at both ends, the types it takes and refuses, and its one message format."""

import math

import numpy as np
import pytest

from mtl_bench.errors import UserInputError
from mtl_bench.validation import check_bool, check_choice, check_int, check_number, fail


def _message(call) -> str:
    with pytest.raises(UserInputError) as err:
        call()
    return str(err.value)


def test_user_input_error_is_a_value_error():
    # Keras-style callers catch ValueError; the CLI catches UserInputError.
    assert issubclass(UserInputError, ValueError)


def test_fail_builds_the_one_format():
    assert str(fail("MMoE", "num_experts", "an integer >= 1", 0)) == (
        "MMoE: num_experts must be an integer >= 1. Received: num_experts=0"
    )
    assert str(fail("", "seed", "an integer >= 0", "x")) == "seed must be an integer >= 0. Received: seed='x'"
    assert isinstance(fail("a", "b", "c", 1), UserInputError)


# --------------------------------------------------------------------- check_int


@pytest.mark.parametrize("value", [1, 2, 5, np.int64(1), np.int32(5), np.uint8(3)])
def test_int_inside_closed_bounds_is_returned_as_int(value):
    result = check_int("Owner", "n", value, 1, 5)
    assert result == int(value) and type(result) is int


@pytest.mark.parametrize("value", [0, 6, -1, 1.0, 2.5, True, False, np.bool_(True), "3", None, np.float64(2.0)])
def test_int_outside_bounds_or_not_an_int_fails(value):
    assert _message(lambda: check_int("Owner", "n", value, 1, 5)) == (
        f"Owner: n must be an integer in [1, 5]. Received: n={value!r}"
    )


def test_int_without_upper_bound():
    assert check_int("Owner", "n", 10**12) == 10**12  # low defaults to 0, no upper bound
    assert check_int("Owner", "n", 0) == 0
    assert _message(lambda: check_int("Owner", "n", -1)) == "Owner: n must be an integer >= 0. Received: n=-1"
    assert _message(lambda: check_int("Owner", "n", 2, 3)) == "Owner: n must be an integer >= 3. Received: n=2"


# ------------------------------------------------------------------ check_number


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 1, 1.0, np.float32(0.25), np.int64(1), np.float64(1.0)])
def test_number_in_closed_interval_is_returned_as_float(value):
    result = check_number("Owner", "x", value, 0.0, 1.0)
    assert result == float(value) and type(result) is float


@pytest.mark.parametrize(
    "kw, value, ok",
    [
        (dict(low_open=True), 0.0, False),
        (dict(low_open=True), 1e-12, True),
        (dict(low_open=True), 1.0, True),
        (dict(high_open=True), 1.0, False),
        (dict(high_open=True), 1.0 - 1e-12, True),
        (dict(high_open=True), 0.0, True),
        (dict(low_open=True, high_open=True), 0.5, True),
        (dict(low_open=True, high_open=True), 0.0, False),
        (dict(low_open=True, high_open=True), 1.0, False),
    ],
)
def test_number_open_ends(kw, value, ok):
    if ok:
        assert check_number("Owner", "x", value, 0.0, 1.0, **kw) == value
    else:
        with pytest.raises(UserInputError):
            check_number("Owner", "x", value, 0.0, 1.0, **kw)


@pytest.mark.parametrize(
    "kw, constraint",
    [
        (dict(), "a number in [0, 1]"),
        (dict(low_open=True), "a number in (0, 1]"),
        (dict(high_open=True), "a number in [0, 1)"),
        (dict(low_open=True, high_open=True), "a number in (0, 1)"),
    ],
)
def test_number_message_shows_the_interval(kw, constraint):
    assert _message(lambda: check_number("Owner", "x", 2.5, 0.0, 1.0, **kw)) == (
        f"Owner: x must be {constraint}. Received: x=2.5"
    )


def test_number_half_bounded_messages():
    assert _message(lambda: check_number("Owner", "x", -1, 0.0)) == (
        "Owner: x must be a finite number >= 0. Received: x=-1"
    )
    assert _message(lambda: check_number("Owner", "x", 0.0, 0.0, low_open=True)) == (
        "Owner: x must be a finite number > 0. Received: x=0.0"
    )
    assert _message(lambda: check_number("Owner", "x", 3, high=2.0)) == (
        "Owner: x must be a finite number <= 2. Received: x=3"
    )
    assert _message(lambda: check_number("Owner", "x", 2, high=2.0, high_open=True)) == (
        "Owner: x must be a finite number < 2. Received: x=2"
    )
    assert check_number("Owner", "x", -1e300) == -1e300  # unbounded: any finite number


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float32("nan"), np.float64("inf")])
def test_number_rejects_nan_and_infinity_even_without_bounds(value):
    assert _message(lambda: check_number("Owner", "x", value)) == (
        f"Owner: x must be a finite number. Received: x={value!r}"
    )
    with pytest.raises(UserInputError):
        check_number("Owner", "x", value, -math.inf, math.inf)


@pytest.mark.parametrize("value", [True, False, np.bool_(False), "0.5", None, [0.5], 1j])
def test_number_rejects_bools_and_non_numbers(value):
    with pytest.raises(UserInputError, match=r"^Owner: x must be a number in \[0, 1\]\. Received: x="):
        check_number("Owner", "x", value, 0.0, 1.0)


# ------------------------------------------------------------- check_bool / choice


@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
def test_bool_accepts_bools(value):
    result = check_bool("Owner", "flag", value)
    assert result == bool(value) and type(result) is bool


@pytest.mark.parametrize("value", [0, 1, "yes", None, 1.0])
def test_bool_rejects_everything_else(value):
    assert _message(lambda: check_bool("Owner", "flag", value)) == (
        f"Owner: flag must be a bool. Received: flag={value!r}"
    )


def test_choice_returns_the_value_or_lists_the_choices():
    assert check_choice("Owner", "kind", "b", ("a", "b")) == "b"
    assert _message(lambda: check_choice("Owner", "kind", "c", ("a", "b"))) == (
        "Owner: kind must be one of ['a', 'b']. Received: kind='c'"
    )
    assert _message(lambda: check_choice("", "kind", "c", {"a": 1})) == "kind must be one of ['a']. Received: kind='c'"
