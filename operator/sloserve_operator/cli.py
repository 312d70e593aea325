"""`sloserve`: one entry point, one module per command.

Each command module exposes `add_arguments(parser)` and `run(args) -> int` and keeps heavy imports inside
`run`, so `sloserve validate` stays fast and does not need kopf, torch or matplotlib.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("sloserve_operator.commands.validate", "check ModelService files; exit 1 listing every problem"),
    "render": ("sloserve_operator.commands.render", "print the Kubernetes objects a ModelService becomes"),
    "crd": ("sloserve_operator.api.crd", "print the ModelService CustomResourceDefinition"),
    "operator": ("sloserve_operator.commands.operator", "run the Kubernetes operator (kopf)"),
    "simulate": ("sloserve_operator.simulate.cli", "replay a trace through the autoscaler and baselines"),
    "profile": ("sloserve_operator.autoscaler.decide.profile", "measure a runtime's capacity profile with a load sweep"),
    "up": ("sloserve_operator.local.up", "run a ModelService locally: replicas, router, autoscaler"),
    "status": ("sloserve_operator.local.status", "show a local ModelService like `kubectl get msvc`"),
    "load": ("sloserve_operator.local.load", "drive streaming load at an endpoint and report TTFT/ITL"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sloserve", description="Latency-SLO-driven model serving.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            sub.set_defaults(handler=None)
            continue
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.handler is None:
        print(f"sloserve {args.command}: not available in this build", file=sys.stderr)
        return 2
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
