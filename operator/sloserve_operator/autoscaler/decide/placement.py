"""Splitting serving capacity across regions.

With no regions in the spec the fleet is one pseudo-region, DEFAULT_REGION, rendered without a region
constraint. Splits respect each region's minReplicas/maxReplicas and use largest remainders so the parts
always add up to the total (when the bounds allow it). split_plain is the one largest-remainder split; the
operator, local mode, render and the simulator all split through it.
"""

from __future__ import annotations

from sloserve_operator.api.spec import ModelServiceSpec

DEFAULT_REGION = "default"


def region_names(spec: ModelServiceSpec) -> list[str]:
    return [region.name for region in spec.placement.regions] or [DEFAULT_REGION]


def split_by_weight(spec: ModelServiceSpec, total: int, weights: dict[str, float] | None = None) -> dict[str, int]:
    """Serving replicas per region for `total`: each region's minReplicas first, the rest by `weights` (default:
    the spec's) with split_plain; what a region's maxReplicas refuses goes round again to the others."""
    regions = spec.placement.regions
    if not regions:
        return {DEFAULT_REGION: max(total, 0)}
    weights = weights or region_weights(spec)
    counts = {region.name: region.min_replicas for region in regions}
    caps = {region.name: region.max_replicas for region in regions}  # None: no cap of its own
    remaining = max(total - sum(counts.values()), 0)
    open_regions = [name for name in counts if caps[name] is None or counts[name] < caps[name]]
    while remaining > 0 and open_regions:
        extra = split_plain(remaining, {name: weights.get(name, 0.0) for name in open_regions})
        for name in open_regions:
            room = extra[name] if caps[name] is None else min(extra[name], caps[name] - counts[name])
            counts[name] += room
            remaining -= room
        open_regions = [name for name in open_regions if caps[name] is None or counts[name] < caps[name]]
    return counts


def region_bounds(spec: ModelServiceSpec, region: str) -> tuple[int, int]:
    """(min, max) serving replicas for one region; the default region is bounded by the fleet's bounds."""
    for item in spec.placement.regions:
        if item.name == region:
            upper = item.max_replicas if item.max_replicas is not None else spec.scaling.max_replicas
            return item.min_replicas, upper
    return spec.scaling.min_replicas, spec.scaling.max_replicas


def region_weights(spec: ModelServiceSpec) -> dict[str, float]:
    return {region.name: float(region.weight) for region in spec.placement.regions} or {DEFAULT_REGION: 1.0}


def split_plain(total: int, weights: dict[str, float]) -> dict[str, int]:
    """`total` split by weight with largest remainders, no bounds (e.g. the warm pool across regions)."""
    names = list(weights)
    if not names or total <= 0:
        return {name: 0 for name in names}
    weight_sum = sum(max(weight, 0.0) for weight in weights.values()) or float(len(names))
    shares = {name: total * (max(weights[name], 0.0) if weight_sum else 1.0) / weight_sum for name in names}
    counts = {name: int(shares[name]) for name in names}
    by_remainder = sorted(names, key=lambda name: (-(shares[name] - counts[name]), names.index(name)))
    for name in by_remainder[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


def fit_to_bounds(spec: ModelServiceSpec, counts: dict[str, int]) -> dict[str, int]:
    """Clamp each region to its own bounds, then the total to spec.scaling min/max.

    Extra replicas for the fleet minimum go by the spec's weights; a total above the maximum is trimmed
    from the regions furthest above their weighted share, never below a region's own minimum.
    """
    names = region_names(spec)
    fitted = {}
    for name in names:
        low, high = region_bounds(spec, name)
        fitted[name] = min(max(counts.get(name, 0), low), high)
    weights = region_weights(spec)
    for _ in range(spec.scaling.max_replicas + sum(fitted.values()) + 1):
        total = sum(fitted.values())
        if total < spec.scaling.min_replicas:
            open_regions = [name for name in names if fitted[name] < region_bounds(spec, name)[1]]
            if not open_regions:
                break
            # The region with the smallest count relative to its weight gets the next replica.
            pick = min(open_regions, key=lambda name: (fitted[name] + 1) / weights[name])
            fitted[pick] += 1
        elif total > spec.scaling.max_replicas:
            shrinkable = [name for name in names if fitted[name] > region_bounds(spec, name)[0]]
            if not shrinkable:
                break
            pick = max(shrinkable, key=lambda name: fitted[name] / weights[name])
            fitted[pick] -= 1
        else:
            break
    return fitted
