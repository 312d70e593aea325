"""`sloserve render -f FILE [--replicas N]`: the Kubernetes objects a ModelService becomes."""

from __future__ import annotations

import argparse
import sys

from sloserve_operator.api.manifest_io import dump_objects, load_documents
from sloserve_operator.api.spec import validate_document


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", required=True, help="ModelService YAML file (- for stdin)")
    parser.add_argument("--replicas", type=int, default=None,
                        help="serving replicas in total, split across regions by weight "
                             "(default: spec.replicas in manual mode, else minReplicas)")
    parser.add_argument("--no-monitoring", action="store_true",
                        help="omit PodMonitor/PrometheusRule (clusters without the Prometheus operator)")


def default_serving(service) -> int:
    """What a fresh cluster would run before the autoscaler's first decision."""
    scaling = service.spec.scaling
    if scaling.mode == "manual":
        return service.spec.replicas
    return scaling.min_replicas


def run(args: argparse.Namespace) -> int:
    from sloserve_operator.autoscaler.decide.placement import split_by_weight
    from sloserve_operator.kube.render import render_objects

    objects = []
    for document in load_documents(args.filename):
        service, problems = validate_document(document)
        if service is None:
            for problem in problems:
                print(f"{args.filename}: {problem}", file=sys.stderr)
            return 1
        total = args.replicas if args.replicas is not None else default_serving(service)
        objects.extend(render_objects(service, split_by_weight(service.spec, total),
                                      monitoring=not args.no_monitoring))
    sys.stdout.write(dump_objects(objects))
    return 0
