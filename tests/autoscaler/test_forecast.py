"""The demand forecast: follows ramps, ignores short or flat history, never forecasts downwards."""

from sloserve_operator.autoscaler.decide import forecast
from sloserve_operator.autoscaler.decide.forecast import MAX_GROWTH, forecast_rate, trend_slope


def _series(rate_at, seconds: int, step: int = 10) -> list[tuple[float, float]]:
    return [(float(t), rate_at(t)) for t in range(0, seconds + 1, step)]


def test_flat_load_forecasts_the_current_rate() -> None:
    samples = _series(lambda t: 5.0, 600)
    assert forecast_rate(samples, 600.0, 150.0) == 5.0


def test_ramp_is_extrapolated_over_the_horizon() -> None:
    samples = _series(lambda t: 5.0 + 0.02 * t, 600)  # +0.02 req/s per second
    forecast = forecast_rate(samples, 600.0, 150.0)
    current = samples[-1][1]
    assert current + 0.5 * 0.02 * 150 < forecast <= current + 1.2 * 0.02 * 150


def test_falling_load_forecasts_the_current_rate() -> None:
    samples = _series(lambda t: 20.0 - 0.02 * t, 600)
    assert forecast_rate(samples, 600.0, 150.0) == samples[-1][1]


def test_short_history_has_no_trend() -> None:
    samples = [(0.0, 10.0), (10.0, 14.0), (20.0, 18.0), (30.0, 22.0)]
    assert trend_slope(samples, 30.0) == 0.0
    assert forecast_rate(samples, 30.0, 150.0) == 22.0


def test_forecast_is_capped() -> None:
    samples = _series(lambda t: 1.0 + 0.5 * t, 300)
    assert forecast_rate(samples, 300.0, 600.0) <= samples[-1][1] * MAX_GROWTH + 1e-9


def test_one_noisy_sample_moves_the_forecast_little(monkeypatch) -> None:
    # A doubling of the windowed rate in one tick: the trend (60 s time constant) extrapolates part of the
    # jump (cap lifted, so the trend alone is tested); the stabilization window does not remember forecast spikes.
    monkeypatch.setattr(forecast, "MAX_GROWTH", 10.0)
    samples = _series(lambda t: 10.0, 600) + [(610.0, 20.0)]
    assert forecast_rate(samples, 610.0, 150.0) < 20.0 + 0.7 * 10.0
