"""The Kubernetes side: render children, reconcile them, the kopf handlers, the actuator, the API client,
conditions, SLO rules, the dashboard and the chart-rendered manifests.

The operator's autoscale tick (autoscale_tick.py) and its ConfigMap memory live here too: they read and write
the cluster, and call the cluster-independent loop in autoscaler/.
"""
