"""Try other values of the autoscaling policy's constants on a scenario set, against the shipped values in the
same run.

Every round on issue 13 asked the same question of a change: on a set of scenarios, how many meet the
objective, at how many replica-hours, and how far below it are the rest, against the policy as shipped. This
runs sloserve alone (bench/autoscale.py's scenarios, the simulator; no baselines, no files written) twice per
scenario, with the shipped constants and with the ones given, and prints both per scenario and per set:

    .venv/bin/python bench/policy_probe.py --set dev HEADROOM=1.2
    .venv/bin/python bench/policy_probe.py --random 17 BURST_QUANTILE_Z=0.84 LENGTH_MEMORY_SECONDS=300

NAME=VALUE sets NAME in every module of the decision that has it (autoscaler/decide: policy, lengths,
calibration, bursts, forecast, capacity): a constant one module imports from another exists in both. The
simulator runs on simulated time, so the figures do not depend on the machine; the baseline is measured in
the same run anyway, so a probe never compares against results stored by older code. Develop on the dev
set; check on a fresh `--random` or `--random --wide` seed no earlier probe has seen (bench/NOTES.md keeps
the list of seeds used).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

from autoscale import AZURE, MOONCAKE, SCENARIOS, scenario_names, scenario_spec


def decision_modules() -> list[ModuleType]:
    """The modules whose module-level constants make up the policy's setting."""
    from sloserve_operator.autoscaler.decide import bursts, calibration, capacity, forecast, lengths, policy

    return [policy, lengths, calibration, bursts, forecast, capacity]


def parse_setting(items: list[str]) -> dict[str, float]:
    """NAME=VALUE pairs; a NAME no decision module defines as a number is an error (a typo would otherwise
    probe the shipped policy under another label)."""
    setting: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        holders = [m for m in decision_modules() if isinstance(getattr(m, name, None), (int, float))]
        if not holders:
            raise ValueError(f"{name} is not a numeric constant of the decision modules")
        try:
            setting[name] = float(value)
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not a number") from None
    return setting


@contextlib.contextmanager
def applied(setting: dict[str, float]) -> Iterator[None]:
    """The constants set in every module that has them, and restored afterwards."""
    saved: list[tuple[ModuleType, str, object]] = []
    try:
        for name, value in setting.items():
            for module in decision_modules():
                if hasattr(module, name):
                    old = getattr(module, name)
                    saved.append((module, name, old))
                    setattr(module, name, type(old)(value) if isinstance(old, int) and value.is_integer() else value)
        yield
    finally:
        for module, name, old in reversed(saved):
            setattr(module, name, old)


@dataclass(frozen=True)
class Outcome:
    within_both: float
    replica_hours: float
    objective: float

    @property
    def met(self) -> bool:
        return self.within_both >= self.objective

    @property
    def shortfall(self) -> float:
        """Points below the objective (0 when met)."""
        return max(self.objective - self.within_both, 0.0) * 100.0


def run_sloserve(name: str) -> Outcome:
    """sloserve alone on one named (or drawn) scenario, as bench/autoscale.py runs it."""
    from sloserve_operator.autoscaler.decide.capacity import load_profile
    from sloserve_operator.simulate.compare import compare

    scenario = SCENARIOS[name]
    profile, spec, requests = load_profile(scenario.profile), scenario_spec(scenario), scenario.build()
    comparison = compare(requests, profile, spec, policies=("sloserve",), tune=False)
    result = comparison.find("sloserve", "-").result
    return Outcome(result.within_both, result.replica_hours, comparison.objective)


def totals(outcomes: list[Outcome]) -> str:
    return (f"{sum(o.met for o in outcomes)} of {len(outcomes)} met, "
            f"{sum(o.replica_hours for o in outcomes):.1f} replica-hours, "
            f"shortfall {sum(o.shortfall for o in outcomes):.1f} points")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("setting", nargs="+", help="NAME=VALUE: a constant of the decision modules")
    parser.add_argument("--set", choices=("shared", "dev", "held-out", "new", "all"), default="dev",
                        help="named scenario set (default dev)")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="just these scenarios")
    parser.add_argument("--random", type=int, metavar="SEED", help="40 scenarios drawn with this seed instead")
    parser.add_argument("--wide", action="store_true", help="with --random: the wide kinds too")
    args = parser.parse_args()
    missing = [str(path) for path in (AZURE, MOONCAKE) if not path.exists()]
    if missing:
        print(f"policy_probe: traces not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        setting = parse_setting(args.setting)
    except ValueError as error:
        parser.error(str(error))
    names = scenario_names(args.set, args.only, args.random, wide=args.wide)
    label = " ".join(f"{k}={v:g}" for k, v in setting.items())
    print(f"| scenario | shipped: within, replica-hours | {label}: within, replica-hours | change |")
    print("|---|---|---|---|")
    shipped: list[Outcome] = []
    probed: list[Outcome] = []
    for name in names:
        base = run_sloserve(name)
        with applied(setting):
            trial = run_sloserve(name)
        shipped.append(base)
        probed.append(trial)
        flip = "" if base.met == trial.met else (" (now met)" if trial.met else " (now MISSED)")
        print(f"| {name} | {base.within_both:.2%}, {base.replica_hours:.2f} | {trial.within_both:.2%}, "
              f"{trial.replica_hours:.2f} | {round(100 * (trial.within_both - base.within_both), 2) + 0.0:+.2f} points, "
              f"{trial.replica_hours / base.replica_hours - 1:+.1%}{flip} |", flush=True)
    print(f"\n- shipped: {totals(shipped)}\n- {label}: {totals(probed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
