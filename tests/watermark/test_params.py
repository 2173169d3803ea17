from __future__ import annotations

import pytest

from hydraguard.watermark.params import WatermarkParams


@pytest.mark.parametrize(
    "values",
    [{"context_width": 0}, {"gamma": 0.0}, {"gamma": 1.0}, {"delta": -0.5}, {"delta": float("nan")}],
)
def test_out_of_range_parameters_are_refused(values: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        WatermarkParams(**values)  # type: ignore[arg-type]


def test_defaults_follow_the_paper() -> None:
    assert WatermarkParams() == WatermarkParams(context_width=1, gamma=0.25, delta=2.0)
