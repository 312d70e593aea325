"""The autoscaling loop shared by the operator, local mode and the simulator: observe -> decide -> act.

observe/  metrics sources (Prometheus, direct scrape), PromQL, the Observation a tick decides on
decide/   the policy (pure), the capacity model and its measured profiles, forecast, placement by region
act/      warm-pool roles: which pods serve, which wait warm, which go first on scale-down

This package imports nothing from kube/ or local/ (tests/autoscaler/test_independence.py keeps it so): the
decision is the same code wherever it runs, which is what makes the simulator's numbers mean something.
"""
