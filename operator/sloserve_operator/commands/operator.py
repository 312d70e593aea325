"""`sloserve operator`: run the ModelService operator (kopf) against the current cluster.

Leader election uses kopf peering: every replica gets a random priority (or --priority), so exactly one (the
highest) is active and the others pause until its peering record expires. A replica that starts below a running
one is paused from its start and logs nothing until it resumes. Liveness and readiness are kopf's health
endpoint; the operator's own metrics are served on --metrics-port.
"""

from __future__ import annotations

import argparse
import logging
import os
import random


def label_pair(text: str) -> tuple[str, str]:
    """KEY=VALUE of --monitoring-label; the API server checks the syntax of the label itself."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[],
                       help="watch this namespace (repeatable; glob patterns allowed)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    parser.add_argument("--prometheus-url", default=os.environ.get("SLOSERVE_PROMETHEUS_URL"),
                        help="Prometheus the autoscaler queries; without it only manual sizing runs")
    parser.add_argument("--autoscale-interval", type=float, default=10.0,
                        help="seconds between autoscaler ticks per ModelService (default 10)")
    parser.add_argument("--metrics-window", type=float, default=60.0,
                        help="seconds of history each observation covers (default 60)")
    parser.add_argument("--drift-interval", type=float, default=60.0,
                        help="seconds between drift checks of each ModelService's children (default 60)")
    parser.add_argument("--runtime-image", default=os.environ.get("SLOSERVE_RUNTIME_IMAGE"),
                        help="image for the bundled engine (default: render.py's default)")
    parser.add_argument("--monitoring-label", action="append", default=[], type=label_pair, metavar="KEY=VALUE",
                        help="label for the PodMonitors and PrometheusRules the operator creates (repeatable), "
                             "e.g. release=kube-prometheus-stack so that stack's Prometheus selects them")
    parser.add_argument("--bind-address", default="0.0.0.0",
                        help="address the health and metrics endpoints listen on (default 0.0.0.0; tests: 127.0.0.1)")
    parser.add_argument("--health-port", type=int, default=8080, help="liveness/readiness port (/healthz)")
    parser.add_argument("--metrics-port", type=int, default=9090, help="operator /metrics port (0: off)")
    parser.add_argument("--peering", default="sloserve",
                        help="kopf peering name for leader election (KopfPeering objects)")
    parser.add_argument("--peering-lifetime", type=int, default=60,
                        help="seconds a silent replica counts as alive; a standby takes over after it (default 60)")
    parser.add_argument("--request-timeout", type=float, default=30.0,
                        help="seconds each Kubernetes API call may take (default 30)")
    parser.add_argument("--wedged-after", type=float, default=300.0,
                        help="/healthz fails once a handler has been running this many seconds (default 300)")
    parser.add_argument("--priority", type=int, default=None,
                        help="peering priority; the highest live replica acts (default: random per start)")
    parser.add_argument("--standalone", action="store_true", help="no peering: a single replica")
    parser.add_argument("--log-format", choices=["json", "plain"], default="json", help="log format")
    parser.add_argument("--verbose", action="store_true", help="debug logging")


def run(args: argparse.Namespace) -> int:
    import kopf

    from sloserve_operator.kube import operator_metrics
    from sloserve_operator.kube.handlers import OperatorConfig, register

    log_format = kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN
    kopf.configure(verbose=args.verbose, log_format=log_format)
    if not args.verbose:  # one access line per probe every few seconds buries the operator's own logs
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    images = {"bundled": args.runtime_image} if args.runtime_image else {}
    config = OperatorConfig(prometheus_url=args.prometheus_url, autoscale_interval=args.autoscale_interval,
                            metrics_window=args.metrics_window, drift_interval=args.drift_interval,
                            peering_lifetime=args.peering_lifetime, images=images,
                            request_timeout=args.request_timeout, wedged_after=args.wedged_after,
                            monitoring_labels=dict(args.monitoring_label))
    registry = register(kopf.OperatorRegistry(), config)
    if args.metrics_port:
        operator_metrics.serve(args.metrics_port, addr=args.bind_address)
    kopf.run(
        registry=registry,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering,
        priority=random.randint(1, 1_000_000) if args.priority is None else args.priority,
        liveness_endpoint=f"http://{args.bind_address}:{args.health_port}/healthz",
    )
    return 0
