"""MetricsAvailable tells "no sample has ever arrived" (nearly always: no Prometheus selects the PodMonitor)
apart from "samples stopped or are partial", using status.observed.lastSampleTime across ticks."""

from __future__ import annotations

from sloserve_operator.autoscaler.observe.observation import Observation, RegionObservation
from sloserve_operator.kube.autoscale_tick import metrics_condition, summarize

EMPTY = Observation(time=1000.0, regions={"default": RegionObservation("default", 60.0)},
                    problems=("no series for the PodMonitor's labels",))
PARTIAL = Observation(time=1010.0, regions={"default": RegionObservation("default", 60.0, ready_replicas=1)},
                      problems=("no requests finished in the window",))


def test_never_a_sample_says_so_and_names_the_monitoring_labels():
    condition = metrics_condition(EMPTY, None)
    assert (condition["status"], condition["reason"]) == ("False", "NoSamplesYet")
    assert "--monitoring-label" in condition["message"] and "monitoring.labels" in condition["message"]
    assert summarize(EMPTY, None)["lastSampleTime"] is None


def test_a_sample_once_seen_is_remembered_and_missing_data_is_not_reported_as_never():
    observed = summarize(PARTIAL, None)
    assert observed["lastSampleTime"] == "1970-01-01T00:16:50Z"
    assert metrics_condition(PARTIAL, None)["reason"] == "MetricsMissing"  # a series exists, figures are partial
    later = summarize(EMPTY, observed)
    assert later["lastSampleTime"] == observed["lastSampleTime"]  # kept while nothing arrives
    assert metrics_condition(EMPTY, observed)["reason"] == "MetricsMissing"
