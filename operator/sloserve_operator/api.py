"""The ModelService API: spec and status as pydantic models.

These models are the single source of truth. The CRD's openAPIV3Schema (crd.py) is generated from them,
field descriptions included, and the cross-field rules below are repeated there as CEL so the API server
refuses what pydantic refuses. Field names are camelCase on the wire, snake_case in Python.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from .units import (
    CPU_PATTERN,
    DURATION_PATTERN,
    MEMORY_PATTERN,
    PERCENT_PATTERN,
    parse_cpu,
    parse_duration,
    parse_memory,
    parse_percent,
)

GROUP = "sloserve.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelService"
PLURAL = "modelservices"
SINGULAR = "modelservice"
SHORT_NAMES = ["msvc"]
CATEGORIES = ["sloserve"]
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def _check(parser):
    def validate(value: str) -> str:
        parser(value)
        return value

    return AfterValidator(validate)


Duration = Annotated[str, Field(pattern=DURATION_PATTERN), _check(parse_duration)]
CpuQuantity = Annotated[str, Field(pattern=CPU_PATTERN), _check(parse_cpu)]
MemoryQuantity = Annotated[str, Field(pattern=MEMORY_PATTERN), _check(parse_memory)]
Percent = Annotated[str, Field(pattern=PERCENT_PATTERN), _check(parse_percent)]


class _Model(BaseModel):
    """camelCase on the wire, unknown fields refused (a typo must not silently become a default)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Engine(StrEnum):
    bundled = "bundled"
    vllm = "vllm"
    sglang = "sglang"


class Quantization(StrEnum):
    none = "none"
    int8 = "int8"
    int4 = "int4"
    fp8 = "fp8"


class SpeculativeMethod(StrEnum):
    none = "none"
    ngram = "ngram"
    draft = "draft"


class ScalingMode(StrEnum):
    slo = "slo"
    manual = "manual"


class ModelRef(_Model):
    name: str = Field(
        description="Model name served on the OpenAI API (the `model` field of requests) and used as the "
        "model_name metric label.",
        min_length=1,
        max_length=128,
    )
    uri: str = Field(
        default="",
        description="Where the weights come from: pvc://CLAIM/PATH, hf://ORG/NAME, file:///PATH, or empty for "
        "the runtime's bundled default (SmolLM2-135M-Instruct).",
        pattern=r"^((pvc|hf|file|s3|gs)://.+)?$",
    )
    revision: str = Field(default="", description="Model revision (commit or tag) for hf:// URIs.")


class Speculative(_Model):
    method: SpeculativeMethod = Field(
        default=SpeculativeMethod.none,
        description="Speculative decoding: none, ngram (prompt lookup) or draft (a smaller draft model).",
    )
    num_tokens: int = Field(
        default=4, ge=1, le=16, description="Tokens proposed per step (k), verified in one target forward."
    )
    draft_model: str | None = Field(
        default=None, description="URI of the draft model (same tokenizer as the target); required for draft."
    )


class Runtime(_Model):
    quantization: Quantization = Field(
        default=Quantization.none,
        description="Weight quantization: none, int8 (per-channel), int4 (group-wise) or fp8 (GPU only).",
    )
    speculative: Speculative = Field(default_factory=Speculative, description="Speculative decoding settings.")
    max_batch_size: int = Field(
        default=64, ge=1, le=4096, description="Most sequences decoded together in one engine step."
    )
    max_batched_tokens: int = Field(
        default=4096, ge=16, le=1048576, description="Per-step token budget; long prompts are prefilled in chunks."
    )
    prefix_caching: bool = Field(default=True, description="Reuse KV blocks of shared prompt prefixes.")
    max_model_len: int = Field(default=8192, ge=16, le=1048576, description="Longest prompt plus output, tokens.")
    image: str | None = Field(
        default=None, description="Override the container image (default: the operator's image for the engine)."
    )
    threads: int | None = Field(
        default=None, ge=1, le=256, description="CPU threads per replica (CPU serving; default: the CPU request)."
    )


class Resources(_Model):
    gpus: int = Field(default=1, ge=0, le=16, description="GPUs per replica (nvidia.com/gpu); 0 serves on CPU.")
    gpu_type: str | None = Field(
        default=None,
        description="GPU product to schedule on (node label nvidia.com/gpu.product), e.g. nvidia-h100.",
    )
    cpu: CpuQuantity = Field(default="4", description="CPU request and limit per replica.")
    memory: MemoryQuantity = Field(default="32Gi", description="Memory request and limit per replica.")


class LatencyBudget(_Model):
    p95: Duration = Field(description="95th-percentile budget, e.g. 500ms.")

    @property
    def p95_seconds(self) -> float:
        return parse_duration(self.p95)


class SLO(_Model):
    ttft: LatencyBudget = Field(description="Time to first token budget.")
    itl: LatencyBudget = Field(description="Inter-token latency budget (time between streamed tokens).")
    objective: Percent = Field(
        default="99%",
        description="Share of requests that must meet both budgets over 30 days; sets the error budget "
        "that the burn-rate alerts watch.",
    )

    @property
    def objective_fraction(self) -> float:
        return parse_percent(self.objective)


class WarmPool(_Model):
    size: int = Field(default=0, ge=0, le=64, description="Ready replicas kept out of serving to absorb bursts.")


class ScaleDown(_Model):
    stabilization_window: Duration = Field(
        default="5m", description="Headroom must last this long before the autoscaler removes replicas."
    )
    max_step: int = Field(default=1, ge=1, le=64, description="Most replicas removed in one scale-down.")

    @property
    def stabilization_seconds(self) -> float:
        return parse_duration(self.stabilization_window)


class ProfileRef(_Model):
    config_map: str = Field(description="ConfigMap (same namespace) holding a capacity profile JSON.")
    key: str = Field(default="profile.json", description="Key of the profile JSON in the ConfigMap.")


class Scaling(_Model):
    mode: ScalingMode = Field(
        default=ScalingMode.slo,
        description="slo: the autoscaler sizes the fleet to the budgets; manual: spec.replicas (scale subresource).",
    )
    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest serving replicas overall.")
    max_replicas: int = Field(default=8, ge=1, le=1000, description="Most serving replicas overall.")
    warm_pool: WarmPool = Field(default_factory=WarmPool, description="Warm replicas held against cold starts.")
    scale_down: ScaleDown = Field(default_factory=ScaleDown, description="How cautiously to remove capacity.")
    profile: ProfileRef | None = Field(
        default=None,
        description="Measured capacity profile (`sloserve profile`); learned online from observations if unset.",
    )


class Region(_Model):
    name: str = Field(description="Region name, matched against the node label topology.kubernetes.io/region.",
                      min_length=1, max_length=63, pattern=NAME_PATTERN)
    weight: int = Field(default=1, ge=1, le=1000, description="Share of capacity when traffic is not yet known.")
    min_replicas: int = Field(default=0, ge=0, le=1000, description="Fewest serving replicas in this region.")
    max_replicas: int | None = Field(default=None, ge=1, le=1000, description="Most serving replicas here.")


class Placement(_Model):
    regions: list[Region] = Field(
        default_factory=list,
        max_length=32,
        description="Regions to run in, each a Deployment; empty means one Deployment with no region constraint.",
    )
    pending_timeout: Duration = Field(
        default="5m", description="Pods Pending this long mark their region short of capacity; its deficit spills."
    )


class ModelServiceSpec(_Model):
    model: ModelRef = Field(description="The model to serve.")
    engine: Engine = Field(default=Engine.bundled, description="Inference engine: bundled, vllm or sglang.")
    runtime: Runtime = Field(default_factory=Runtime, description="Engine settings.")
    resources: Resources = Field(default_factory=Resources, description="Per-replica resources.")
    slo: SLO = Field(description="Latency budgets the autoscaler keeps.")
    scaling: Scaling = Field(default_factory=Scaling, description="Autoscaling settings.")
    placement: Placement = Field(default_factory=Placement, description="Regional placement.")
    replicas: int | None = Field(
        default=None, ge=0, le=1000, description="Serving replicas in manual mode (the scale subresource's target)."
    )

    @model_validator(mode="after")
    def _cross_field_rules(self) -> ModelServiceSpec:
        problems = cross_field_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self


def cross_field_problems(spec: ModelServiceSpec) -> list[str]:
    """Rules across fields. Each message starts with the field it is about; crd.py repeats them in CEL."""
    problems: list[str] = []
    scaling = spec.scaling
    if scaling.min_replicas > scaling.max_replicas:
        problems.append(
            f"spec.scaling.minReplicas ({scaling.min_replicas}) must not exceed "
            f"spec.scaling.maxReplicas ({scaling.max_replicas})"
        )
    if scaling.mode == ScalingMode.manual and spec.replicas is None:
        problems.append("spec.replicas is required when spec.scaling.mode is manual")
    speculative = spec.runtime.speculative
    if speculative.method == SpeculativeMethod.draft and not speculative.draft_model:
        problems.append("spec.runtime.speculative.draftModel is required when method is draft")
    if spec.runtime.quantization == Quantization.fp8 and spec.resources.gpus == 0:
        problems.append("spec.runtime.quantization fp8 needs a GPU: set spec.resources.gpus > 0 or use int8/int4")
    if spec.engine != Engine.bundled and spec.runtime.quantization in (Quantization.int8, Quantization.int4):
        problems.append(
            f"spec.runtime.quantization {spec.runtime.quantization.value} is not supported by engine "
            f"{spec.engine.value}: it loads pre-quantized checkpoints (AWQ/GPTQ) only; use quantization none "
            "with a quantized model, fp8, or engine bundled"
        )
    if spec.engine == Engine.sglang and speculative.method == SpeculativeMethod.ngram:
        problems.append(
            "spec.runtime.speculative.method ngram is not supported by engine sglang: use draft or engine bundled/vllm"
        )
    if spec.engine != Engine.bundled and spec.runtime.threads is not None:
        problems.append(f"spec.runtime.threads applies to the bundled engine only, not {spec.engine.value}")
    names = [region.name for region in spec.placement.regions]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        problems.append(f"spec.placement.regions names must be unique; repeated: {', '.join(duplicates)}")
    region_floor = sum(region.min_replicas for region in spec.placement.regions)
    if region_floor > scaling.max_replicas:
        problems.append(
            f"spec.placement.regions minReplicas add up to {region_floor}, more than "
            f"spec.scaling.maxReplicas ({scaling.max_replicas})"
        )
    for index, region in enumerate(spec.placement.regions):
        if region.max_replicas is not None and region.min_replicas > region.max_replicas:
            problems.append(f"spec.placement.regions[{index}].minReplicas must not exceed its maxReplicas")
    return problems


# ---------------------------------------------------------------- status


class Condition(_Model):
    type: Literal["Ready", "Progressing", "SLOMet", "MetricsAvailable", "Degraded"] = Field(
        description="Condition type."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="CamelCase reason.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: str | None = Field(default=None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="Spec generation this was computed from.")


class RegionStatus(_Model):
    name: str = Field(description="Region name.")
    desired: int = Field(default=0, description="Serving replicas the autoscaler wants here.")
    serving: int = Field(default=0, description="Ready pods with role serving.")
    warm: int = Field(default=0, description="Ready pods with role warm.")
    pending: int = Field(default=0, description="Pods not yet scheduled or ready.")


class ObservedLatency(_Model):
    ttft_p95: str | None = Field(default=None, description="Observed p95 TTFT over the autoscaler's window.")
    itl_p95: str | None = Field(default=None, description="Observed p95 inter-token latency.")
    request_rate: float | None = Field(default=None, description="Requests per second.")
    within_budget: float | None = Field(default=None, description="Fraction of requests meeting both budgets.")


class Decision(_Model):
    reason: str = Field(default="", description="Why the autoscaler chose this size.")
    from_: int = Field(default=0, alias="from", description="Serving replicas before.")
    to: int = Field(default=0, description="Serving replicas after.")
    time: str | None = Field(default=None, description="When it was taken (RFC 3339).")


class ModelServiceStatus(_Model):
    observed_generation: int | None = Field(default=None, description="Last spec generation reconciled.")
    conditions: list[Condition] = Field(default_factory=list, description="Ready, Progressing, SLOMet, ...")
    replicas: int = Field(default=0, description="Pods of all roles (the scale subresource's status).")
    serving: int = Field(default=0, description="Ready pods serving traffic.")
    warm: int = Field(default=0, description="Ready pods in the warm pool.")
    desired_replicas: int = Field(default=0, description="Serving replicas the autoscaler wants.")
    selector: str = Field(default="", description="Label selector of the pods, for the scale subresource.")
    regions: list[RegionStatus] = Field(default_factory=list, description="Per-region counts.")
    observed: ObservedLatency = Field(default_factory=ObservedLatency, description="Latest observations.")
    last_scale_time: str | None = Field(default=None, description="When the serving count last changed.")
    last_decision: Decision | None = Field(default=None, description="The autoscaler's latest decision.")


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelService(BaseModel):
    """A whole ModelService object as read from YAML or the API server."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")
    api_version: Literal["sloserve.io/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["ModelService"] = KIND
    metadata: ObjectMeta
    spec: ModelServiceSpec
    status: ModelServiceStatus | None = None


# ---------------------------------------------------------------- validation entry points


def problems_of(error: ValidationError) -> list[str]:
    """One line per problem, each naming its field as a dotted path (spec.scaling.minReplicas: ...)."""
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"] if not str(part).startswith("function-after"))
        for message in item["msg"].removeprefix("Value error, ").split("\n"):
            named = message.startswith(("spec.", "metadata."))
            lines.append(message if named or not path else f"{path}: {message}")
    return lines


def validate_document(document: Any) -> tuple[ModelService | None, list[str]]:
    """Parse a ModelService; on failure return every problem found (cross-field rules included)."""
    if not isinstance(document, dict):
        return None, ["document: expected a mapping (a ModelService object)"]
    try:
        return ModelService.model_validate(document), []
    except ValidationError as error:
        return None, problems_of(error)


def parse_spec(spec: dict[str, Any]) -> ModelServiceSpec:
    """Parse a spec dict as the operator receives it from kopf; raises ValidationError."""
    return ModelServiceSpec.model_validate(spec)
