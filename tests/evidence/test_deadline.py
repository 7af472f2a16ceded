"""The upload deadline rule (UPLOAD-24H), which the device, central's index and the late report share."""

from __future__ import annotations

import math

import pytest

from evidence.deadline import Level, UploadPolicy
from evidence.errors import ConfigError

HOUR = 3600.0


def test_a_recording_is_judged_by_the_hours_since_it_ended__UPLOAD_24H() -> None:
    policy = UploadPolicy()
    assert policy.judge(0.0, 1 * HOUR).level is Level.OK
    warned = policy.judge(0.0, 13 * HOUR)
    assert (warned.level, warned.threshold_hours) == (Level.WARN, 12.0)
    assert policy.judge(0.0, 21 * HOUR).threshold_hours == 20.0
    late = policy.judge(0.0, 24 * HOUR)
    assert (late.level, late.threshold_hours, late.hours_left) == (Level.LATE, 24.0, 0.0)


@pytest.mark.parametrize(("deadline", "warn"), [(0.0, ()), (-1.0, ()), (math.nan, ()), (math.inf, ()),
                                                (24.0, (30.0,)), (24.0, (-1.0,)), (24.0, (math.nan,))])
def test_the_policy_refuses_impossible_numbers(deadline: float, warn: tuple[float, ...]) -> None:
    with pytest.raises(ConfigError):
        UploadPolicy(deadline, warn)
