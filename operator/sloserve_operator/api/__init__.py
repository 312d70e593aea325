"""The ModelService API: spec and status models, units, the engine catalogue, CRD and reference generation.

Everything here is plain data and validation; the Kubernetes side (kube/), the autoscaler, local mode and
the simulator all read a ModelService through `api.spec`.
"""
