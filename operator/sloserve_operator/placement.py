"""Splitting serving capacity across regions.

With no regions in the spec the fleet is one pseudo-region, DEFAULT_REGION, rendered without a region
constraint. Splits respect each region's minReplicas/maxReplicas and use largest remainders so the parts
always add up to the total (when the bounds allow it).
"""

from __future__ import annotations

from .api import ModelServiceSpec

DEFAULT_REGION = "default"


def region_names(spec: ModelServiceSpec) -> list[str]:
    return [region.name for region in spec.placement.regions] or [DEFAULT_REGION]


def split_by_weight(spec: ModelServiceSpec, total: int, weights: dict[str, float] | None = None) -> dict[str, int]:
    """Serving replicas per region for `total`, proportional to `weights` (default: the spec's weights)."""
    regions = spec.placement.regions
    if not regions:
        return {DEFAULT_REGION: max(total, 0)}
    weights = weights or {region.name: float(region.weight) for region in regions}
    floors = {region.name: region.min_replicas for region in regions}
    caps = {region.name: region.max_replicas if region.max_replicas is not None else total for region in regions}
    counts = dict(floors)
    remaining = max(total - sum(counts.values()), 0)
    while remaining > 0:
        open_regions = [name for name in counts if counts[name] < caps[name]]
        if not open_regions:
            break
        weight_sum = sum(max(weights.get(name, 0.0), 0.0) for name in open_regions) or float(len(open_regions))
        shares = {
            name: remaining * (max(weights.get(name, 0.0), 0.0) or (weight_sum / len(open_regions))) / weight_sum
            for name in open_regions
        }
        granted = {name: min(int(shares[name]), caps[name] - counts[name]) for name in open_regions}
        if sum(granted.values()) == 0:
            # Largest remainder gets the next replica; ties go to the region listed first.
            best = max(open_regions, key=lambda name: shares[name] - int(shares[name]))
            granted[best] = 1
        for name, extra in granted.items():
            counts[name] += extra
        remaining -= sum(granted.values())
    return counts
