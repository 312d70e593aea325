"""The ModelService API: spec and status as pydantic models.

These models are the single source of truth. The CRD's openAPIV3Schema (crd.py) is generated from them,
field descriptions included, and the docs/reference.md table too (reference.py). Field names are camelCase
on the wire, snake_case in Python.

Rules that span several fields are declared once, as `Rule`s on the model they concern: each carries a
Python check (run by pydantic) and the same rule in Kubernetes CEL (emitted by crd.py as
x-kubernetes-validations), with one message, so `sloserve validate` and the API server refuse the same specs
with the same words. A test evaluates both on a table of specs to keep them in agreement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from sloserve_operator.api.units import (
    CPU_PATTERN,
    DURATION_PATTERN,
    MEMORY_PATTERN,
    PERCENT_PATTERN,
    parse_cpu,
    parse_duration,
    parse_memory,
    parse_percent,
    percent_value,
)

GROUP = "sloserve.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelService"
PLURAL = "modelservices"
SINGULAR = "modelservice"
SHORT_NAMES = ["msvc"]
CATEGORIES = ["sloserve"]
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # DNS-1123 label (region names)
# ModelService names become Service names (<name>, <name>-<region>), which must be DNS-1035 labels.
SERVICE_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# Object names (the profile's ConfigMap): DNS-1123 subdomains; ConfigMap keys; label values (gpuType selects
# nodes by the label nvidia.com/gpu.product), non-empty here.
SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
CONFIG_MAP_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
LABEL_VALUE_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
MODEL_URI_PATTERN = r"^(pvc|hf|file|s3|gs)://.+$"
MODEL_URI_OR_EMPTY_PATTERN = r"^((pvc|hf|file|s3|gs)://.+)?$"
DNS_LABEL_MAX = 63


# ---------------------------------------------------------------- value types


def _checked_by(parser: Callable[[str], Any]) -> AfterValidator:
    """Run a units.py parser for its friendly error; keep the user's string."""

    def validate(value: str) -> str:
        parser(value)
        return value

    return AfterValidator(validate)


# What reaches kube-apiserver as a JSON integer: kubectl (and Argo CD, Flux: Go's YAML-to-JSON) writes a whole
# float such as 3.0 as 3, and the API server decodes integer literals into int64.
_INT64_MAX = 2**63 - 1


def _json_integer(value: Any) -> int | None:
    """The integer the API server would take `value` for, or None when it is no JSON integer."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value) if -_INT64_MAX - 1 <= value <= _INT64_MAX else None


def _what(value: Any) -> str:
    """How a YAML author would name the value they wrote."""
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, bool):
        return f"{str(value).lower()}, a boolean"
    return {list: "a list", dict: "a mapping"}.get(type(value), repr(value))


def _whole_number(value: Any) -> Any:
    """The API server refuses "3" and true where an integer belongs, so `sloserve validate` must too (pydantic
    alone would convert them); 3.0 is an integer to both."""
    if isinstance(value, str | bool):
        raise ValueError(f"must be a whole number, written without quotes (got {_what(value)})")
    return value


def _number(value: Any) -> Any:
    """As _whole_number, for fractional fields (admission.ttftMultiple)."""
    if isinstance(value, str | bool):
        raise ValueError(f"must be a number, written without quotes (got {_what(value)})")
    return value


def _boolean(value: Any) -> Any:
    """The API server takes only true and false; pydantic alone would take "yes", "on" or 1."""
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, written without quotes (got {_what(value)})")
    return value


Integer = Annotated[int, BeforeValidator(_whole_number)]
OptionalInteger = Annotated[int | None, BeforeValidator(_whole_number)]  # (Integer | None loses ge/le in the schema)
Number = Annotated[float, BeforeValidator(_number)]
Boolean = Annotated[bool, BeforeValidator(_boolean)]


def _quantity_as_string(value: Any) -> Any:
    """Kubernetes lets quantities be written as JSON integers (`cpu: 4`, also `4.0`); keep them as strings. Any
    other number is refused by the API server (the field is int-or-string), so say how to write it."""
    if isinstance(value, bool):
        raise ValueError(f"write it as a quoted string, e.g. '4', '500m' or '2Gi' (got {_what(value)})")
    if not isinstance(value, int | float):
        return value
    whole = _json_integer(value)
    if whole is None:
        raise ValueError(f"write it as a quoted string, e.g. '1.5', '500m' or '2Gi' (got the number {value!r})")
    return str(whole)


def _no_bare_number(example: str) -> BeforeValidator:
    """A YAML number where a string with a unit belongs (`p95: 0.5`, `objective: 0.99`) is ambiguous: say how
    to write it instead of pydantic's "should be a valid string"."""

    def validate(value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(f"write it as a quoted string with its unit, e.g. {example} (got the number {value!r})")
        return value

    return BeforeValidator(validate)


# The patterns go to the CRD schema only: pydantic reports the parsers' clearer messages instead. A quantity
# written as a bare integer skips the pattern on the API server, so the CRD also has a minimum (-1 refused).
Duration = Annotated[
    str,
    _no_bare_number("'500ms', '1.5s' or '5m'"),
    Field(max_length=32, json_schema_extra={"pattern": DURATION_PATTERN}),
    _checked_by(parse_duration),
]
Percent = Annotated[
    str,
    _no_bare_number("'99%' or '99.9%'"),
    Field(max_length=16, json_schema_extra={"pattern": PERCENT_PATTERN}),
    _checked_by(percent_value),
]
CpuQuantity = Annotated[
    str,
    BeforeValidator(_quantity_as_string),
    Field(max_length=32, json_schema_extra={"pattern": CPU_PATTERN, "x-kubernetes-int-or-string": True,
                                            "minimum": 0}),
    _checked_by(parse_cpu),
]
MemoryQuantity = Annotated[
    str,
    BeforeValidator(_quantity_as_string),
    Field(max_length=32, json_schema_extra={"pattern": MEMORY_PATTERN, "x-kubernetes-int-or-string": True,
                                            "minimum": 0}),
    _checked_by(parse_memory),
]


# ---------------------------------------------------------------- cross-field rules


@dataclass(frozen=True)
class Rule:
    """A rule across fields of one object, stated for pydantic (`check`) and for the API server (`cel`).

    `field` is the camelCase path, relative to the object, of the field the problem is reported on ("" for
    the object itself); `message` says what is wrong and how to fix it. `check` receives the object (a model
    instance, or a partial view of an invalid document) and returns True when the rule holds; `cel` is the
    same rule in Kubernetes CEL with `self` bound to the object, after the API server applied defaults.
    """

    field: str
    message: str
    cel: str
    check: Callable[[Any], bool]

    def problem(self, path: str) -> str:
        return f"{_join(path, self.field)}: {self.message}"


def _wire_names(cls: type[BaseModel]) -> frozenset[str]:
    """The keys a document uses for the model's fields: their camelCase aliases (see _from_document)."""
    return frozenset(field.alias or name for name, field in cls.model_fields.items())


class _RuleChecked(BaseModel):
    """Runs the class's `rules` once its own fields have parsed; reports every broken rule at once."""

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_absent(cls, data: Any) -> Any:
        """`engine: null` is how YAML leaves a field unset: the API server prunes a null from a known field and
        applies its default, so it must mean the same here (an unknown field stays an unknown field)."""
        if not isinstance(data, dict):
            return data
        known = _wire_names(cls)
        return {key: value for key, value in data.items() if value is not None or key not in known}

    @model_validator(mode="after")
    def _check_rules(self) -> Any:
        broken = [rule for rule in type(self).rules if not rule.check(self)]
        if broken:
            raise PydanticCustomError(
                "cross_field",
                "{summary}",
                {
                    "summary": "; ".join(f"{rule.field}: {rule.message}" for rule in broken),
                    "problems": [(rule.field, rule.message) for rule in broken],
                },
            )
        return self


class _Model(_RuleChecked):
    """camelCase on the wire, unknown fields refused (a typo must not silently become a default)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# ---------------------------------------------------------------- spec


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
        description="Where the weights come from: pvc://CLAIM/PATH, hf://ORG/NAME, file:///PATH (inside the "
        "image), or empty for the engine's default (the bundled runtime's SmolLM2-135M-Instruct). s3:// and gs:// "
        "are reserved: accepted here, refused when rendered until a fetcher exists.",
        max_length=2048,
        pattern=MODEL_URI_OR_EMPTY_PATTERN,
    )
    revision: str = Field(
        default="", max_length=128, description="Model revision (commit or tag) for hf:// URIs; empty: main."
    )
    storage: MemoryQuantity = Field(
        default="100Gi",
        description="Disk for an hf:// download: the emptyDir's sizeLimit and the pod's ephemeral-storage request "
        "(weights plus a margin), so the scheduler picks a node with room and a runaway download is evicted "
        "instead of filling the node. Unused for other sources.",
    )


class Speculative(_Model):
    method: SpeculativeMethod = Field(
        default=SpeculativeMethod.none,
        description="Speculative decoding: none, ngram (prompt lookup) or draft (a smaller draft model).",
    )
    num_tokens: Integer = Field(
        default=4, ge=1, le=16, description="Tokens proposed per step (k), verified in one target forward."
    )
    draft_model: str | None = Field(
        default=None,
        max_length=2048,
        pattern=MODEL_URI_PATTERN,
        description="URI of the draft model (same tokenizer as the target, same schemes as model.uri); "
        "required when method is draft.",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "draftModel",
            "is required when method is draft",
            "self.method != 'draft' || has(self.draftModel)",
            lambda s: s.method != SpeculativeMethod.draft or s.draft_model is not None,
        ),
    )


class Runtime(_Model):
    quantization: Quantization = Field(
        default=Quantization.none,
        description="Weight quantization: none, int8 (per-channel), int4 (group-wise) or fp8 (GPU only). "
        "int8/int4 quantize at load time (engine bundled only).",
    )
    speculative: Speculative = Field(default_factory=Speculative, description="Speculative decoding settings.")
    max_batch_size: Integer = Field(
        default=64, ge=1, le=4096, description="Most sequences decoded together in one engine step."
    )
    max_batched_tokens: Integer = Field(
        default=4096, ge=16, le=1048576, description="Per-step token budget; long prompts are prefilled in chunks."
    )
    prefix_caching: Boolean = Field(default=True, description="Reuse KV blocks of shared prompt prefixes.")
    max_model_len: Integer = Field(default=8192, ge=16, le=1048576, description="Longest prompt plus output, tokens.")
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="Override the container image (default: the operator's image for the engine).",
    )
    threads: OptionalInteger = Field(
        default=None,
        ge=1,
        le=256,
        description="CPU threads per replica (engine bundled only; default: the CPU request, at least 1).",
    )


class Resources(_Model):
    gpus: Integer = Field(default=1, ge=0, le=16, description="GPUs per replica (nvidia.com/gpu); 0 serves on CPU.")
    gpu_type: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=LABEL_VALUE_PATTERN,
        description="GPU product to schedule on (node label nvidia.com/gpu.product), e.g. nvidia-h100.",
    )
    cpu: CpuQuantity = Field(default="4", description="CPU request and limit per replica ('4', '500m').")
    memory: MemoryQuantity = Field(default="32Gi", description="Memory request and limit per replica ('32Gi').")

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "gpuType",
            "needs gpus > 0: a GPU type only selects nodes for replicas that request GPUs",
            "!has(self.gpuType) || self.gpus > 0",
            lambda r: r.gpu_type is None or r.gpus > 0,
        ),
    )


class LatencyBudget(_Model):
    p95: Duration = Field(description="95th-percentile budget, e.g. 500ms.")

    rules: ClassVar[tuple[Rule, ...]] = (
        # Given the duration pattern, "some digit is not 0" is exactly "the duration is above zero".
        Rule("p95", "must be above zero", "self.p95.matches('[1-9]')", lambda b: parse_duration(b.p95) > 0),
    )

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

    rules: ClassVar[tuple[Rule, ...]] = (
        # Given the percentage pattern (at most two digits before the point), "some digit is not 0" is exactly
        # "above 0%"; 100% and more never match the pattern.
        Rule("objective", "must be above 0% (and below 100%), e.g. '99%' or '99.9%'",
             "self.objective.matches('[1-9]')", lambda s: percent_value(s.objective) > 0),
    )

    @property
    def objective_fraction(self) -> float:
        return parse_percent(self.objective)


class WarmPool(_Model):
    size: Integer = Field(default=0, ge=0, le=64, description="Ready replicas kept out of serving to absorb bursts.")


class ScaleDown(_Model):
    stabilization_window: Duration = Field(
        default="5m", description="Headroom must last this long before the autoscaler removes replicas."
    )
    max_step: Integer = Field(default=1, ge=1, le=64, description="Most replicas removed in one scale-down.")

    @property
    def stabilization_seconds(self) -> float:
        return parse_duration(self.stabilization_window)


class ProfileRef(_Model):
    config_map: str = Field(
        description="ConfigMap (same namespace) holding a capacity profile JSON.",
        min_length=1,
        max_length=253,
        pattern=SUBDOMAIN_PATTERN,
    )
    key: str = Field(default="profile.json", min_length=1, max_length=253, pattern=CONFIG_MAP_KEY_PATTERN,
                     description="Key of the profile JSON in the ConfigMap.")


class Scaling(_Model):
    mode: ScalingMode = Field(
        default=ScalingMode.slo,
        description="slo: the autoscaler sizes the fleet to the budgets; manual: spec.replicas (scale subresource).",
    )
    min_replicas: Integer = Field(default=1, ge=0, le=1000, description="Fewest serving replicas overall.")
    max_replicas: Integer = Field(default=8, ge=1, le=1000, description="Most serving replicas overall.")
    warm_pool: WarmPool = Field(default_factory=WarmPool, description="Warm replicas held against cold starts.")
    scale_down: ScaleDown = Field(default_factory=ScaleDown, description="How cautiously to remove capacity.")
    profile: ProfileRef | None = Field(
        default=None,
        description="Measured capacity profile (`sloserve profile`); learned online from observations if unset.",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "minReplicas",
            "must not exceed maxReplicas",
            "self.minReplicas <= self.maxReplicas",
            lambda s: s.min_replicas <= s.max_replicas,
        ),
    )


class Region(_Model):
    name: str = Field(
        description="Region name, matched against the node label topology.kubernetes.io/region (or "
        "topology.kubernetes.io/zone with placement.topology: zone).",
        min_length=1,
        max_length=DNS_LABEL_MAX,
        pattern=NAME_PATTERN,
    )
    weight: Integer = Field(default=1, ge=1, le=1000, description="Share of capacity when traffic is not yet known.")
    min_replicas: Integer = Field(default=0, ge=0, le=1000, description="Fewest serving replicas in this region.")
    max_replicas: OptionalInteger = Field(default=None, ge=1, le=1000, description="Most serving replicas here.")

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "minReplicas",
            "must not exceed this region's maxReplicas",
            "!has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
            lambda r: r.max_replicas is None or r.min_replicas <= r.max_replicas,
        ),
    )


MAX_REGIONS = 32


Topology = Literal["region", "zone"]


class Placement(_Model):
    regions: list[Region] = Field(
        default_factory=list,
        max_length=MAX_REGIONS,
        description="Regions to run in, each a Deployment; empty means one Deployment with no region constraint.",
    )
    pending_timeout: Duration = Field(
        default="5m", description="Pods Pending this long mark their region short of capacity; its deficit spills."
    )
    topology: Topology = Field(
        default="region",
        description="What a region names inside this cluster: region matches topology.kubernetes.io/region (a "
        "cluster spanning regions is rare: most platforms run one cluster per region); zone matches "
        "topology.kubernetes.io/zone, and the Service over all of them prefers same-zone endpoints "
        "(trafficDistribution: PreferClose, Kubernetes >= 1.31).",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "regions",
            "region names must be unique",
            "!has(self.regions) || self.regions.all(r, self.regions.exists_one(o, o.name == r.name))",
            lambda p: len({region.name for region in p.regions}) == len(p.regions),
        ),
    )


class FailureMode(StrEnum):
    fail_open = "FailOpen"
    fail_close = "FailClose"


class EndpointPicker(_Model):
    name: str = Field(
        description="Service of the endpoint picker (e.g. llm-d's inference scheduler) for the ModelService's "
        "InferencePool; a per-region pool `<name>-<region>` is picked for by the Service `<this name>-<region>`.",
        min_length=1,
        max_length=DNS_LABEL_MAX - 9,
        pattern=SERVICE_NAME_PATTERN,
    )
    port: Integer = Field(default=9002, ge=1, le=65535, description="The endpoint picker's gRPC (ext-proc) port.")
    failure_mode: FailureMode = Field(
        default=FailureMode.fail_close,
        description="What the gateway does when the picker does not answer: FailClose refuses the request, "
        "FailOpen forwards it to any pod of the pool.",
    )


class GatewayRef(_Model):
    name: str = Field(description="Gateway (gateway.networking.k8s.io) the HTTPRoute attaches to.", min_length=1,
                      max_length=253)
    namespace: str | None = Field(default=None, max_length=DNS_LABEL_MAX, pattern=NAME_PATTERN,
                                  description="The Gateway's namespace; default: the ModelService's.")
    section_name: str | None = Field(default=None, max_length=253, pattern=NAME_PATTERN,
                                     description="A listener of the Gateway; default: every listener.")


Hostname = Annotated[str, Field(min_length=1, max_length=253,
                                pattern=r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")]


class HTTPRouteSpec(_Model):
    gateways: list[GatewayRef] = Field(min_length=1, max_length=32,
                                       description="Gateways whose listeners route to this ModelService.")
    hostnames: list[Hostname] = Field(default_factory=list, max_length=16,
                                 description="Host names the route answers for; empty: any the Gateway accepts.")
    path: str = Field(default="/", pattern=r"^/.*$", max_length=1024,
                      description="Path prefix routed to the InferencePool.")


class Routing(_Model):
    endpoint_picker: EndpointPicker = Field(description="The endpoint picker every InferencePool names.")
    http_route: HTTPRouteSpec | None = Field(
        default=None, description="Also render an HTTPRoute `<name>` whose backend is the InferencePool `<name>`.")


class Admission(_Model):
    enabled: Boolean = Field(
        default=True,
        description="Refuse (429 with Retry-After) a request whose expected time to first token exceeds the "
        "limit, instead of queueing it (bundled runtime; vllm and sglang queue as they do).",
    )
    ttft_multiple: Number = Field(
        default=1.0,
        ge=0.1,
        le=100.0,
        description="The limit as a multiple of slo.ttft.p95. The expected time to first token is a linear "
        "model fitted to the replica's observed first tokens: seconds per prompt token admitted ahead (plus the "
        "request's own) and per sequence running; an idle replica always admits. Above 1 admits "
        "requests expected to miss: under overload the queue settles at the limit, so every admitted request "
        "would wait that long.",
    )

    def limit_seconds(self, ttft_budget_seconds: float) -> float | None:
        """The runtime's --admission-limit-ms, in seconds; None when admission is off."""
        return self.ttft_multiple * ttft_budget_seconds if self.enabled else None


class ModelServiceSpec(_Model):
    model: ModelRef = Field(description="The model to serve.")
    engine: Engine = Field(default=Engine.bundled, description="Inference engine: bundled, vllm or sglang.")
    runtime: Runtime = Field(default_factory=Runtime, description="Engine settings.")
    resources: Resources = Field(default_factory=Resources, description="Per-replica resources.")
    slo: SLO = Field(description="Latency budgets the autoscaler keeps.")
    scaling: Scaling = Field(default_factory=Scaling, description="Autoscaling settings.")
    placement: Placement = Field(default_factory=Placement, description="Regional placement.")
    admission: Admission = Field(
        default_factory=Admission, description="Refuse what cannot be served within the TTFT budget.")
    routing: Routing | None = Field(
        default=None,
        description="Inference-gateway routing: render an InferencePool (inference.networking.k8s.io/v1) per "
        "ModelService and per region, and optionally an HTTPRoute; unset: the Services alone (kube-proxy, random).",
    )
    # Defaulted, never absent: the API server answers GET /scale with a 500 when specReplicasPath is unset, and
    # kubectl, VPA and KEDA read /scale. In slo mode it is ignored; the autoscaler's figure is status.desiredReplicas.
    replicas: Integer = Field(
        default=1,
        ge=0,
        le=1000,
        description="Serving replicas in manual mode (the scale subresource's target; default 1, as for a "
        "Deployment). Ignored in slo mode, where the autoscaler sizes the fleet.",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "runtime.quantization",
            "fp8 needs a GPU: set resources.gpus > 0, or use int8/int4 on CPU",
            "self.runtime.quantization != 'fp8' || self.resources.gpus > 0",
            lambda s: s.runtime.quantization != Quantization.fp8 or s.resources.gpus > 0,
        ),
        Rule(
            "runtime.quantization",
            "int8/int4 quantize weights at load time, which only engine bundled does; with vllm or sglang "
            "serve a pre-quantized (AWQ/GPTQ) model with quantization none, or use fp8",
            "self.engine == 'bundled' || !(self.runtime.quantization in ['int8', 'int4'])",
            lambda s: s.engine == Engine.bundled
            or s.runtime.quantization not in (Quantization.int8, Quantization.int4),
        ),
        Rule(
            "runtime.speculative.method",
            "ngram is not supported by engine sglang: use draft, or engine bundled or vllm",
            "self.engine != 'sglang' || self.runtime.speculative.method != 'ngram'",
            lambda s: s.engine != Engine.sglang or s.runtime.speculative.method != SpeculativeMethod.ngram,
        ),
        Rule(
            "runtime.threads",
            "applies to engine bundled only: vllm and sglang size their own thread pools",
            "self.engine == 'bundled' || !has(self.runtime.threads)",
            lambda s: s.engine == Engine.bundled or s.runtime.threads is None,
        ),
        Rule(
            "placement.regions",
            "the regions' minReplicas add up to more than scaling.maxReplicas",
            "!has(self.placement.regions) || "
            "self.placement.regions.map(r, r.minReplicas).sum() <= self.scaling.maxReplicas",
            lambda s: sum(region.min_replicas for region in s.placement.regions) <= s.scaling.max_replicas,
        ),
    )


# ---------------------------------------------------------------- status


MAX_CONDITIONS = 16


class Condition(_Model):
    type: Literal["Ready", "Progressing", "Reconciling", "Stalled", "SLOMet", "MetricsAvailable", "Degraded"] = Field(
        description="Condition type. Reconciling and Stalled are the kstatus conditions Flux and kubectl wait read."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", max_length=1024, description="CamelCase reason.")
    message: str = Field(default="", max_length=32768, description="Human-readable detail.")
    last_transition_time: str | None = Field(default=None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="Spec generation this was computed from.")


class RegionStatus(_Model):
    name: str = Field(max_length=DNS_LABEL_MAX, description="Region name.")
    desired: int = Field(default=0, description="Serving replicas the autoscaler wants here.")
    serving: int = Field(default=0, description="Ready pods with role serving.")
    warm: int = Field(default=0, description="Ready pods with role warm.")
    pending: int = Field(default=0, description="Pods not yet scheduled or ready.")


class ObservedLatency(_Model):
    ttft_p95: str | None = Field(default=None, description="Observed p95 TTFT over the autoscaler's window.")
    itl_p95: str | None = Field(default=None, description="Observed p95 inter-token latency.")
    request_rate: float | None = Field(default=None, description="Requests per second.")
    within_budget: float | None = Field(default=None, description="Fraction of requests meeting both budgets.")
    last_sample_time: str | None = Field(
        default=None, description="When a metrics sample last arrived; absent: none ever has (see MetricsAvailable).")


class Decision(_Model):
    reason: str = Field(default="", description="Why the autoscaler chose this size.")
    from_: int = Field(default=0, alias="from", description="Serving replicas before.")
    to: int = Field(default=0, description="Serving replicas after.")
    time: str | None = Field(default=None, description="When it was taken (RFC 3339).")


class ModelServiceStatus(_Model):
    observed_generation: int | None = Field(default=None, description="Last spec generation reconciled.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        description="Ready, Progressing, SLOMet, MetricsAvailable, Degraded.",
    )
    replicas: int = Field(default=0, description="Pods of all roles.")
    serving: int = Field(default=0, description="Ready pods serving traffic (the scale subresource's status).")
    warm: int = Field(default=0, description="Ready pods in the warm pool.")
    desired_replicas: int = Field(default=0, description="Serving replicas the autoscaler wants.")
    selector: str = Field(default="", description="Label selector of the serving pods, for the scale subresource.")
    regions: list[RegionStatus] = Field(
        default_factory=list, max_length=MAX_REGIONS + 1, description="Per-region counts."
    )
    observed: ObservedLatency = Field(default_factory=ObservedLatency, description="Latest observations.")
    last_scale_time: str | None = Field(default=None, description="When the serving count last changed.")
    last_decision: Decision | None = Field(default=None, description="The autoscaler's latest decision.")


# ---------------------------------------------------------------- the whole object


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=DNS_LABEL_MAX, pattern=SERVICE_NAME_PATTERN)
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelService(_RuleChecked):
    """A whole ModelService object as read from YAML or the API server."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")
    api_version: Literal["sloserve.io/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["ModelService"] = KIND
    metadata: ObjectMeta
    spec: ModelServiceSpec
    status: ModelServiceStatus | None = None

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "metadata.name",
            f"too long for its regions: each per-region Service NAME-REGION must fit {DNS_LABEL_MAX} characters",
            "!has(self.spec.placement.regions) || "
            f"self.spec.placement.regions.all(r, size(self.metadata.name) + size(r.name) < {DNS_LABEL_MAX})",
            lambda m: all(len(m.metadata.name) + 1 + len(r.name) <= DNS_LABEL_MAX for r in m.spec.placement.regions),
        ),
    )


# ---------------------------------------------------------------- validation entry points


def _join(path: str, field: str) -> str:
    return f"{path}.{field}" if path and field else path or field


def _format_loc(root: str, loc: tuple[int | str, ...]) -> str:
    """('spec', 'placement', 'regions', 0, 'name') -> spec.placement.regions[0].name"""
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not part.startswith(("function-", "constrained-")):
            path = _join(path, part)
    return path


_PATTERN_HINTS = {
    NAME_PATTERN: "must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter "
    "or digit",
    SERVICE_NAME_PATTERN: "must be a DNS-1035 label (it names Services): lowercase letters, digits and '-', "
    "starting with a letter and ending with a letter or digit",
    MODEL_URI_PATTERN: "must be a URI: pvc://CLAIM/PATH, hf://ORG/NAME, file:///PATH, s3://... or gs://...",
    SUBDOMAIN_PATTERN: "must be a Kubernetes object name (DNS subdomain): lowercase letters, digits, '-' and '.', "
    "starting and ending with a letter or digit",
    CONFIG_MAP_KEY_PATTERN: "must be a ConfigMap key: letters, digits, '-', '_' and '.'",
    LABEL_VALUE_PATTERN: "must be a label value: letters, digits, '-', '_' and '.', starting and ending with a "
    "letter or digit",
    MODEL_URI_OR_EMPTY_PATTERN: "must be empty or a URI: pvc://CLAIM/PATH, hf://ORG/NAME, file:///PATH, "
    "s3://... or gs://...",
}


def _describe(item: dict[str, Any]) -> str:
    """pydantic's message for one error, reworded where it would not tell a YAML author what to do."""
    kind, message = item["type"], item["msg"]
    if kind == "extra_forbidden":
        return "unknown field (check its spelling and indentation)"
    if kind == "missing":
        return "required field is missing"
    if kind == "string_pattern_mismatch" and item.get("ctx", {}).get("pattern") in _PATTERN_HINTS:
        message = _PATTERN_HINTS[item["ctx"]["pattern"]]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        message = "must be a mapping of fields"  # not "...or instance of Runtime": a class name says nothing
    message = message.removeprefix("Value error, ")
    value = item.get("input")
    if kind not in ("value_error", "cross_field") and isinstance(value, str | int | float | bool | list | dict):
        message += f" (got {value!r})" if isinstance(value, str | int | float) else f" (got {_what(value)})"
    return message


def problems_of(error: ValidationError, root: str = "") -> list[str]:
    """One line per problem, each naming its field as a dotted path (spec.scaling.minReplicas: ...).

    `root` prefixes the paths when the error came from validating a part, e.g. "spec" for parse_spec.
    """
    lines: list[str] = []
    for item in error.errors():
        path = _format_loc(root, item["loc"])
        if item["type"] == "cross_field":
            lines.extend(f"{_join(path, field)}: {message}" for field, message in item["ctx"]["problems"])
        else:
            lines.append(f"{path}: {_describe(item)}" if path else _describe(item))
    return lines


class _Unknown(Exception):
    """A field a rule reads did not parse, so the rule cannot be judged."""


def model_class_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(model class, is_list) for fields typed Model, Model | None or list[Model]; (None, False) otherwise."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        for arg in get_args(annotation):
            found = model_class_of(arg)
            if found[0] is not None:
                return found
    if origin is list:
        (item,) = get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item, True
    return None, False


@cache
def _field_adapter(cls: type[BaseModel], name: str) -> TypeAdapter:
    field = cls.model_fields[name]
    return TypeAdapter(Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation)


class _PartialView:
    """Attribute access on a document that failed validation: fields that parse read as their values (or
    defaults when absent), fields that do not raise _Unknown. Lets every rule whose inputs are valid run."""

    def __init__(self, cls: type[BaseModel], raw: dict[str, Any]) -> None:
        self._cls, self._raw = cls, raw

    def __getattr__(self, name: str) -> Any:
        field = self._cls.model_fields.get(name)
        if field is None:
            raise AttributeError(name)
        key = field.alias or name
        if self._raw.get(key) is None:  # absent, or null (which the API server prunes)
            if field.is_required():
                raise _Unknown(key)
            return field.get_default(call_default_factory=True)
        value = self._raw[key]
        model, is_list = model_class_of(field.annotation)
        if model is None:
            try:
                return _field_adapter(self._cls, name).validate_python(value)
            except ValidationError:
                raise _Unknown(key) from None
        if is_list and isinstance(value, list) and all(isinstance(item, dict) for item in value):
            return [_PartialView(model, item) for item in value]
        if not is_list and isinstance(value, dict):
            return _PartialView(model, value)
        raise _Unknown(key)


def _rule_problems(cls: type[BaseModel], raw: dict[str, Any], path: str) -> list[str]:
    """The broken rules of every object in an invalid document whose rule inputs are themselves valid."""
    lines: list[str] = []
    view = _PartialView(cls, raw)
    for rule in getattr(cls, "rules", ()):
        try:
            if not rule.check(view):
                lines.append(rule.problem(path))
        except _Unknown:
            continue
    for name, field in cls.model_fields.items():
        model, is_list = model_class_of(field.annotation)
        key = field.alias or name
        value = raw.get(key)
        if model is None:
            continue
        if is_list and isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    lines.extend(_rule_problems(model, item, f"{_join(path, key)}[{index}]"))
        elif isinstance(value, dict):
            lines.extend(_rule_problems(model, value, _join(path, key)))
    return lines


def _instance_problems(obj: BaseModel, path: str) -> list[str]:
    lines = [rule.problem(path) for rule in getattr(type(obj), "rules", ()) if not rule.check(obj)]
    for name, field in type(obj).model_fields.items():
        value = getattr(obj, name)
        key = field.alias or name
        if isinstance(value, BaseModel):
            lines.extend(_instance_problems(value, _join(path, key)))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, BaseModel):
                    lines.extend(_instance_problems(item, f"{_join(path, key)}[{index}]"))
    return lines


def cross_field_problems(spec: ModelServiceSpec) -> list[str]:
    """The broken cross-field rules of a spec (empty for any spec that parsed), each naming its field."""
    return _instance_problems(spec, "spec")


def _from_document(cls: type[BaseModel], document: Any) -> Any:
    """Parse a document by its wire names only: Python code may say Scaling(min_replicas=2), but the API server
    refuses `min_replicas:` in YAML as an unknown field, so the validators must too."""
    return cls.model_validate(document, by_alias=True, by_name=False)


def _validate(cls: type[BaseModel], document: Any, root: str) -> tuple[Any, list[str]]:
    try:
        return _from_document(cls, document), []
    except ValidationError as error:
        problems = problems_of(error, root)
    if isinstance(document, dict):
        problems.extend(_rule_problems(cls, document, root))
    return None, list(dict.fromkeys(problems))


def validate_document(document: Any) -> tuple[ModelService | None, list[str]]:
    """Parse a ModelService; on failure return every problem found, cross-field rules included (those whose
    fields are valid are judged even when other fields are not)."""
    if not isinstance(document, dict):
        return None, ["document: expected a mapping (a ModelService object)"]
    return _validate(ModelService, document, "")


def validate_spec(spec: Any) -> tuple[ModelServiceSpec | None, list[str]]:
    """validate_document for a bare spec (as kopf hands it over); problems are named spec.<field>."""
    if not isinstance(spec, dict):
        return None, ["spec: expected a mapping"]
    return _validate(ModelServiceSpec, spec, "spec")


def parse_spec(spec: dict[str, Any]) -> ModelServiceSpec:
    """Parse a spec dict as the operator receives it from kopf; raises ValidationError."""
    return _from_document(ModelServiceSpec, spec)
