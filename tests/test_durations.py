"""Durations: `Nit` / `Nep` (or a bare integer of steps) to steps, and the errors for anything else."""

import pytest

from lth.config.schema import ConfigError
from lth.config.durations import Duration, parse_duration, to_steps


@pytest.mark.parametrize("text,steps", [
    ("500it", 500), ("2ep", 2 * 916), ("0it", 0), ("0ep", 0), (" 7 it ", 7), ("1ep", 916), (63000, 63000), (0, 0),
])
def test_durations_resolve_to_steps(text, steps):
    assert to_steps(text, 916) == steps


def test_parse_keeps_value_and_unit_and_prints_back():
    d = parse_duration("40ep")
    assert d == Duration(40, "ep") and (d.value, d.unit) == (40, "ep") and str(d) == "40ep"
    assert parse_duration(12) == Duration(12, "it") and str(parse_duration(12)) == "12it"
    assert Duration(3, "it").to_steps(100) == 3 and Duration(3, "ep").to_steps(100) == 300


@pytest.mark.parametrize("text", ["abc", "10", "-5it", "1.5ep", "10 steps", "it", "", "5it5", "x5it", True, -1])
def test_anything_else_is_refused_naming_the_setting_and_the_value(text):
    with pytest.raises(ConfigError) as e:
        parse_duration(text, setting="train.duration")
    msg = str(e.value)
    assert msg.startswith(f"train.duration={text!r}")
    if not isinstance(text, int) or isinstance(text, bool):
        assert msg.endswith("is not a duration: write a whole number of iterations or epochs, e.g. '50000it' or '40ep'")


def test_the_default_setting_name_and_to_steps_pass_the_setting_through():
    with pytest.raises(ConfigError, match=r"^duration='x'"):
        parse_duration("x")
    with pytest.raises(ConfigError, match=r"^rewind.point='y'"):
        to_steps("y", 10, setting="rewind.point")
    with pytest.raises(ConfigError, match=r"^duration='z' is not"):
        to_steps("z", 10)
