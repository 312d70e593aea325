"""Capacity profiles (schema, shipped files, the capacity model) and the placement helpers."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sloserve_operator.autoscaler.decide.capacity import (
    CapacityProfile,
    load_profile,
    load_shipped,
    shipped_names,
)
from sloserve_operator.autoscaler.decide.placement import fit_to_bounds, split_by_weight, split_plain

from .helpers import make_spec


@pytest.mark.parametrize("name", ["smollm2-135m-cpu", "llama-8b-h100"])
def test_shipped_profiles_load_and_round_trip(name):
    assert name in shipped_names()
    profile = load_shipped(name)
    assert profile.source  # says where its numbers come from
    again = CapacityProfile.from_json(profile.to_json())
    assert again == profile


def test_a_measured_profile_carries_its_fit_error_and_a_derived_one_none():
    assert load_shipped("smollm2-135m-cpu").fit_error == pytest.approx(0.02)  # its source says 2.0%
    assert load_shipped("llama-8b-h100").fit_error is None
    assert "fitError" not in json.loads(load_shipped("llama-8b-h100").to_json())


def test_capacity_falls_with_tighter_budgets_and_longer_prompts():
    profile = load_shipped("llama-8b-h100")
    loose = profile.max_rate_within_budget(2.0, 0.1, 1000, 200)
    assert profile.max_rate_within_budget(0.5, 0.1, 1000, 200) <= loose
    assert profile.max_rate_within_budget(2.0, 0.1, 4000, 200) < loose
    # Within budget at the returned rate, over it well beyond.
    ttft, itl, _ = profile.predict(loose, 1000, 200)
    assert ttft <= 2.0 and itl <= 0.1
    assert profile.predict(loose * 3, 1000, 200)[0] > 2.0 or profile.predict(loose * 3, 1000, 200)[1] > 0.1
    assert profile.max_rate_within_budget(0.001, 0.001, 1000, 200) == 0.0


def test_profile_from_file_path(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(load_shipped("smollm2-135m-cpu").to_json())
    assert load_profile(str(path)).model == "SmolLM2-135M-Instruct"


@pytest.mark.parametrize("document, fragment", [
    ("{not json", "not valid JSON"),
    ("[]", "expected a JSON object"),
    ('{"schema": "other/v9", "step": {}}', "schema"),
    ('{"model": "m"}', "'step'"),
    ('{"step": {"baseSeconds": -1, "perPrefillTokenSeconds": 0, "perDecodeSeqSeconds": 0}}', "baseSeconds"),
    ('{"step": {"baseSeconds": 0.01, "perPrefillTokenSeconds": "x", "perDecodeSeqSeconds": 0}}', "perPrefill"),
    ('{"step": {"baseSeconds": 0.01, "perPrefillTokenSeconds": 0, "perDecodeSeqSeconds": 0}, "points": [{}]}',
     "points[0]"),
    ('{"step": {"baseSeconds": 0.01, "perPrefillTokenSeconds": 0, "perDecodeSeqSeconds": 0}, "fitError": -0.1}',
     "fitError"),
    ('{"step": {"baseSeconds": 0.01, "perPrefillTokenSeconds": 0, "perDecodeSeqSeconds": 0}, "fitError": "7%"}',
     "fitError"),
])
def test_bad_profiles_are_rejected_with_the_field_named(document, fragment):
    with pytest.raises(ValueError, match=None) as error:
        CapacityProfile.from_json(document)
    assert fragment in str(error.value)


def test_unknown_shipped_profile_lists_the_known_ones():
    with pytest.raises(ValueError, match="smollm2-135m-cpu"):
        load_shipped("nope")


def test_split_plain_adds_up_and_follows_weights():
    assert split_plain(4, {"a": 3.0, "b": 1.0}) == {"a": 3, "b": 1}
    assert sum(split_plain(7, {"a": 1.0, "b": 1.0, "c": 1.0}).values()) == 7
    assert split_plain(0, {"a": 1.0}) == {"a": 0}


WEIGHTS = st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=5)


@given(total=st.integers(min_value=0, max_value=200), weights=WEIGHTS)
def test_the_one_split_adds_up_and_gives_each_region_its_share_rounded(total, weights):
    """Largest remainder: every part is its exact share rounded down or up, and the parts add up."""
    named = {f"r{i}": float(w) for i, w in enumerate(weights)}
    counts = split_plain(total, named)
    assert sum(counts.values()) == total
    for name, weight in named.items():
        exact = total * weight / sum(named.values())
        assert int(exact) <= counts[name] <= int(exact) + 1


@given(total=st.integers(min_value=0, max_value=60), weights=WEIGHTS,
       bounds=st.lists(st.tuples(st.integers(0, 3), st.one_of(st.none(), st.integers(0, 10))), min_size=5, max_size=5))
def test_the_bounded_split_keeps_each_region_in_its_bounds_and_adds_up_when_it_can(total, weights, bounds):
    regions = []
    for i, weight in enumerate(weights):
        low, extra = bounds[i]
        region = {"name": f"r{i}", "weight": weight, "minReplicas": low}
        if extra is not None:
            region["maxReplicas"] = max(low + extra, 1)
        regions.append(region)
    spec = make_spec(min_replicas=0, max_replicas=1000, regions=regions)
    counts = split_by_weight(spec, total)
    lows = [r["minReplicas"] for r in regions]
    highs = [r.get("maxReplicas") for r in regions]
    for count, low, high in zip(counts.values(), lows, highs, strict=True):
        assert count >= low and (high is None or count <= high)
    room = None if None in highs else sum(highs)
    assert sum(counts.values()) == max(sum(lows), total if room is None else min(total, room))
    if all(low == 0 for low in lows) and all(high is None for high in highs):  # no bounds: the plain split
        assert counts == split_plain(total, {r["name"]: float(r["weight"]) for r in regions})


def test_fit_to_bounds_respects_region_and_fleet_limits():
    regions = [{"name": "us", "weight": 3, "minReplicas": 1, "maxReplicas": 5}, {"name": "eu", "weight": 1}]
    spec = make_spec(min_replicas=4, max_replicas=8, regions=regions)
    assert fit_to_bounds(spec, {"us": 0, "eu": 0}) == {"us": 3, "eu": 1}  # floor 4 split by weight
    fitted = fit_to_bounds(spec, {"us": 9, "eu": 9})
    assert fitted["us"] <= 5 and sum(fitted.values()) == 8
    assert fit_to_bounds(spec, {"us": 2, "eu": 3}) == {"us": 2, "eu": 3}


def test_profile_json_keys_are_camel_case():
    data = json.loads(load_shipped("smollm2-135m-cpu").to_json())
    assert {"schema", "step", "maxBatchSize", "maxBatchedTokens", "coldStartSeconds", "points"} <= set(data)
    assert set(data["step"]) == {"baseSeconds", "perPrefillTokenSeconds", "perDecodeSeqSeconds",
                                 "perAttendedTokenSeconds"}


def test_itl_tail_is_one_chunk_step_not_the_mean_step_plus_a_chunk():
    # Long prompts at moderate load: over 5% of steps carry a full chunk, so the ITL p95 is such a step:
    # base + a * (chunk budget left by the decoders) + b * batch. The mean step already averages chunks in.
    profile = load_shipped("llama-8b-h100")
    step = profile.step
    state = profile.steady_state(5.0, 2000, 200)
    assert state is not None
    chunk = profile.max_batched_tokens - state.batch
    expected = step.base_seconds + step.per_decode_seq_seconds * state.batch + step.per_prefill_token_seconds * chunk
    assert state.itl_p95 == pytest.approx(expected)


def test_attention_costs_capacity_and_lengthens_the_chunk_tail():
    base = load_shipped("llama-8b-h100")
    attentive = dataclasses.replace(base, step=dataclasses.replace(base.step, per_attended_token_seconds=2e-8))
    assert attentive.step.effective(1000, 200) == pytest.approx(
        (base.step.per_prefill_token_seconds + 2e-8 * 1000, base.step.per_decode_seq_seconds + 2e-8 * 1100))
    assert attentive.max_rate_within_budget(2.0, 0.1, 2000, 200) < base.max_rate_within_budget(2.0, 0.1, 2000, 200)
    plain, slow = base.steady_state(3.0, 2000, 200), attentive.steady_state(3.0, 2000, 200)
    assert plain is not None and slow is not None
    assert slow.itl_p95 > plain.itl_p95 and slow.ttft_quantile(0.95) > plain.ttft_quantile(0.95)


def test_the_prompts_spread_scales_attention_and_nothing_else():
    """Attention per prompt token is E[L^2] / (2 E[L]) = (1 + c^2) / 2 x the mean prompt; exponential
    lengths (c^2 = 1) are the default, and a profile without attention does not care."""
    cpu = load_shipped("smollm2-135m-cpu")
    c = cpu.step.per_attended_token_seconds
    assert c > 0
    assert cpu.step.effective(400, 20) == cpu.step.effective(400, 20, 1.0)
    heavy, light = cpu.step.effective(400, 20, 1.7), cpu.step.effective(400, 20, 0.0)
    assert heavy[0] - light[0] == pytest.approx(c * 400 * 1.7 / 2)
    assert heavy[1] == light[1]  # a decoding sequence attends its own context, whatever the others'
    rates = [cpu.max_rate_within_budget(3.0, 0.3, 400, 20, 0.95, 10, spread) for spread in (0.0, 1.0, 1.7, 3.0)]
    assert rates == sorted(rates, reverse=True) and rates[0] > rates[-1]
    h100 = load_shipped("llama-8b-h100")
    assert h100.step.per_attended_token_seconds == 0
    assert h100.max_rate_within_budget(1.0, 0.05, 1000, 200, 0.95, 8, 3.0) == \
        h100.max_rate_within_budget(1.0, 0.05, 1000, 200, 0.95, 8)


def test_ttft_quantile_and_within_fraction_agree():
    profile = load_shipped("llama-8b-h100")
    state = profile.steady_state(8.0, 1000, 200, quantile=0.95, fleet_size=4)
    assert state is not None
    for quantile in (0.5, 0.95, 0.99):
        assert state.ttft_within(state.ttft_quantile(quantile)) == pytest.approx(quantile)
    assert profile.steady_state(1e6, 1000, 200) is None  # overloaded


def test_capacity_at_the_budgets_quantile_meets_the_budget_exactly():
    profile = load_shipped("llama-8b-h100")
    rate = profile.max_rate_within_budget(1.0, 0.05, 1000, 200, quantile=0.95, fleet_size=8)
    ttft, itl, _ = profile.predict(rate, 1000, 200, 0.95, 8)
    assert max(ttft / 1.0, itl / 0.05) == pytest.approx(1.0, abs=1e-3)


def test_a_pooled_prefill_queue_is_the_per_replica_one_on_a_single_replica():
    """One replica is one queue whatever the router: the pooled model must give the M/M/1 time in system."""
    profile = load_shipped("llama-8b-h100")
    alone, pooled = profile.steady_state(4.0, 2000, 28), profile.steady_state(4.0, 2000, 28, pooled=True)
    assert alone is not None and pooled is not None
    for quantile in (0.5, 0.95, 0.99):
        assert pooled.ttft_quantile(quantile) == pytest.approx(alone.ttft_quantile(quantile), rel=1e-6)
    # M/M/1: the time in system is exponential with mean service / (1 - load)
    mean = 1.0 / alone.wait_rate
    assert alone.ttft_quantile(0.95) == pytest.approx(alone.ttft_shift + mean * math.log(20.0), rel=1e-6)


def test_a_load_aware_router_pools_the_prefill_queues_and_capacity_grows_with_the_fleet():
    """With a load-aware router a prompt waits only when every replica is busy (Erlang C), so a larger fleet
    carries more per replica; with random routing (pooled=False) each replica is its own queue."""
    profile = load_shipped("llama-8b-h100")

    def capacity(size: int, pooled: bool) -> float:
        return profile.max_rate_within_budget(1.0, 0.05, 2000, 28, 0.95, size, 1.0, pooled)

    pooled = [capacity(size, True) for size in (1, 3, 10, 30)]
    assert pooled == sorted(pooled) and pooled[-1] > 1.05 * pooled[0]
    assert pooled[0] == pytest.approx(capacity(1, False), rel=1e-6)
    assert all(capacity(size, True) >= capacity(size, False) for size in (3, 10, 30))
    state = profile.steady_state(pooled[2], 2000, 28, 0.95, 10, 1.0, pooled=True)
    assert state is not None and state.ttft_within(1.0) == pytest.approx(0.95, abs=1e-3)
    for quantile in (0.5, 0.95, 0.99):
        assert state.ttft_within(state.ttft_quantile(quantile)) == pytest.approx(quantile, abs=1e-6)


def test_a_prompt_tail_sets_the_own_prefills_p95_to_that_prompts_prefill():
    """At a trickle TTFT is the first decode step plus the own prefill; with the prompts' p95 given, the own
    prefill's p95 is that prompt's lone prefill (each chunk a decode step, its tokens, attention to the prefix),
    which grows faster than the length; a tail no longer than the exponential's keeps the mean's prefill."""
    cpu = load_shipped("smollm2-135m-cpu")
    step = cpu.step
    mean, tail = 250.0, 3.6
    plain = cpu.steady_state(1e-6, mean, 4)
    tailed = cpu.steady_state(1e-6, mean, 4, prompt_tail=tail)
    assert plain is not None and tailed is not None
    decode_step = step.base_seconds  # nothing decoding at a trickle
    long_prompt = mean * tail
    chunk = cpu.max_batched_tokens
    lone = (long_prompt / chunk * decode_step + step.per_prefill_token_seconds * long_prompt
            + step.per_attended_token_seconds * long_prompt**2 / 2)
    assert tailed.ttft_quantile(0.95) == pytest.approx(tailed.ttft_shift + lone, rel=1e-3)
    assert tailed.ttft_quantile(0.95) > plain.ttft_quantile(0.95)
    assert tailed.wait_rate == plain.wait_rate  # the queue's wait is the mean prompt's, unchanged
    short = cpu.steady_state(1e-6, mean, 4, prompt_tail=1.0)
    assert short is not None and short.prefill_seconds == plain.prefill_seconds
    # It costs capacity where the TTFT budget binds, and nothing when it is not given.
    assert cpu.max_rate_within_budget(0.6, 1.0, mean, 4, 0.95, 6, 0.9, True, tail) < \
        cpu.max_rate_within_budget(0.6, 1.0, mean, 4, 0.95, 6, 0.9, True)
    assert cpu.max_rate_within_budget(0.6, 1.0, mean, 4, 0.95, 6, 0.9, True, None) == \
        cpu.max_rate_within_budget(0.6, 1.0, mean, 4, 0.95, 6, 0.9, True)
