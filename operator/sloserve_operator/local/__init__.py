"""Local mode: a ModelService on one machine, no Kubernetes.

The same spec validation (api.py), policy (policy.py) and warm-pool planning (warmpool.py) as the operator;
only the actuator differs: replicas are `sloserve-runtime` processes on 127.0.0.1 (replicas.py), the
Service is a small least-outstanding-requests router (router.py), metrics come from an embedded Prometheus
when the binary is installed, else from direct scrapes (prometheus.py), and controller.py runs the loop.
"""
