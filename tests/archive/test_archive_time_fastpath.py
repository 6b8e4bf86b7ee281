"""The archive's time column: the cheap uniform-unit path gives exactly what the checked path gives.

Expectations are hand-computed µs values; every value a 13/16-digit regex would not take as plain digits (or
that a cast would read differently: a sign, a space, a leading zero) leaves the fast path."""

from __future__ import annotations

import pyarrow as pa
import pytest

from schemahub.mapping import _epoch_ms_or_us_uniform, _time_micros


def test_uniform_us_and_ms_are_read_without_the_regex_path():
    us = pa.array(["1740787200000001", None, "1740787299999999"])
    micros, bad = _epoch_ms_or_us_uniform(us)
    assert micros.to_pylist() == [1740787200000001, None, 1740787299999999]
    assert not any(bad.to_pylist())
    ms = pa.array(["1735689599999", "1704067200000"])
    assert _epoch_ms_or_us_uniform(ms)[0].to_pylist() == [1735689599999000, 1704067200000000]


@pytest.mark.parametrize("odd", ["+740787200000001", "-740787200000001", " 740787200000001", "0740787200000001",
                                 "174078720000000", "17407872000000001", "174078720000000x", "1740787200000"])
def test_a_file_with_one_odd_value_takes_the_checked_path(odd):
    text = pa.array(["1740787200000001", odd])
    assert _epoch_ms_or_us_uniform(text) is None
    micros, bad = _time_micros(text, "epoch_ms_or_us")  # the row-by-row path decides, as before
    assert micros[0].as_py() == 1740787200000001
    if odd == "1740787200000":  # a ms value among µs ones: still a time, read as ms
        assert micros[1].as_py() == 1740787200000000 and not bad[1].as_py()
    elif odd == "0740787200000001":  # 16 digits: the regex takes it (the plausibility check quarantines it later)
        assert micros[1].as_py() == 740787200000001 and not bad[1].as_py()
    else:
        assert micros[1].as_py() is None and bad[1].as_py()
