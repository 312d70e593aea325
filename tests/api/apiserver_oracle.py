"""What kube-apiserver (with kubectl's strict field validation) would say about a ModelService, from the CRD.

No validator of our own: the stored object is built the way the API server builds it (nulls pruned, schema
defaults applied: crd.prune_nulls_and_default), the openAPIV3Schema is checked by `jsonschema` and every
x-kubernetes-validations rule is evaluated by the `cel` package (Kubernetes' list `sum()` from its stdlib
extension). The schema is only adapted where Kubernetes reads it differently from JSON Schema:

- `x-kubernetes-int-or-string` is `type: [integer, string]` (apiextensions' ConvertJSONSchemaProps does this);
- unknown fields are refused (`additionalProperties: false`, what kubectl's default --validate=strict asks the
  server for), except under `x-kubernetes-preserve-unknown-fields` and in the root `metadata`, whose other
  fields are the API server's own ObjectMeta;
- the document is first sent as kubectl sends it: its YAML-to-JSON conversion (sigs.k8s.io/yaml, Go's
  encoding/json) writes a whole float such as 3.0 as the integer 3, up to 1e21; a JSON integer is then an
  int64 literal (a larger one decodes as a float, which kube-openapi does not take for an integer).

Known gaps of the stand-in, which the generated specs avoid: Python's `re` lets `$` match before a final
newline (Go's RE2 does not), and NaN or infinities cannot be written as JSON at all. A client other than
kubectl that sends the literal 3.0 gets it refused by the real API server wherever a CEL rule reads that field
("expected int, got float64"); kubectl, Argo CD and Flux (Go, the same conversion) never send one.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import cel
import jsonschema
from cel import stdlib as cel_stdlib
from sloserve_operator.api.crd import build_crd, prune_nulls_and_default

INT64_MAX = 2**63 - 1
GO_PLAIN_FLOAT_LIMIT = 1e21  # encoding/json writes float64s from here on with an exponent


def as_kubectl_sends(value: Any) -> Any:
    """`value` after kubectl's YAML-to-JSON conversion: whole floats become integers."""
    if isinstance(value, dict):
        return {key: as_kubectl_sends(child) for key, child in value.items()}
    if isinstance(value, list):
        return [as_kubectl_sends(child) for child in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < GO_PLAIN_FLOAT_LIMIT:
        return int(value)
    return value


def _is_kubernetes_integer(checker: Any, value: Any) -> bool:
    """An int64 (what the API server decodes an integer literal into); booleans and floats are not."""
    return isinstance(value, int) and not isinstance(value, bool) and -INT64_MAX - 1 <= value <= INT64_MAX


KubernetesValidator = jsonschema.validators.extend(
    jsonschema.Draft7Validator,
    type_checker=jsonschema.Draft7Validator.TYPE_CHECKER.redefine("integer", _is_kubernetes_integer),
)


@functools.cache
def openapi_schema() -> dict[str, Any]:
    """The CRD's openAPIV3Schema as generated (callers must not modify it)."""
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def as_kubernetes_reads_it(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of `schema` that jsonschema evaluates as the API server does (see the module docstring)."""
    schema = copy.deepcopy(schema)

    def visit(node: dict[str, Any], root: bool) -> None:
        if node.get("x-kubernetes-int-or-string"):
            node["type"] = ["integer", "string"]
        if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        for name, child in node.get("properties", {}).items():
            if root and name == "metadata":
                continue  # ObjectMeta: the API server knows its other fields
            visit(child, False)
        if "items" in node:
            visit(node["items"], False)

    visit(schema, True)
    return schema


_VALIDATORS: dict[int, tuple[dict[str, Any], Any]] = {}


def _validator(schema: dict[str, Any]) -> Any:
    """Built once per schema object (kept alive with it, so its id is not reused)."""
    if id(schema) not in _VALIDATORS:
        _VALIDATORS[id(schema)] = (schema, KubernetesValidator(as_kubernetes_reads_it(schema)))
    return _VALIDATORS[id(schema)][1]


def _path(error: jsonschema.ValidationError) -> str:
    """The error's location written like pydantic's: spec.placement.regions[0].weight."""
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def schema_errors(schema: dict[str, Any], document: Any) -> list[str]:
    """jsonschema errors as 'path: message'."""
    return [f"{_path(error)}: {error.message}" for error in _validator(schema).iter_errors(document)]


# Schema errors after which the API server skips the CEL rules (apiextensions' hasBlockingErr: NotSupported,
# Required, TooLong, TooMany, TypeInvalid): the rules could not be evaluated on such a value.
_BLOCKING_KEYWORDS = {"enum", "required", "maxLength", "maxItems", "type"}


def _blocks_cel(schema: dict[str, Any], document: Any) -> bool:
    return any(error.validator in _BLOCKING_KEYWORDS for error in _validator(schema).iter_errors(document))


_CEL_CONTEXT = cel.Context()
cel_stdlib.add_stdlib_to_context(_CEL_CONTEXT)


@functools.cache
def _compiled(rule: str) -> cel.Program:
    return cel.compile(rule)


def cel_problems(node: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Every x-kubernetes-validations rule that does not evaluate to true, as 'path.message'."""
    problems: list[str] = []
    for rule in node.get("x-kubernetes-validations", []):
        _CEL_CONTEXT.add_variable("self", value)
        result = _compiled(rule["rule"]).execute(_CEL_CONTEXT)
        assert isinstance(result, bool), f"{rule['rule']} gave {result!r}"
        if not result:
            problems.append(f"{path}.{rule['message']}" if path else rule["message"])
    if isinstance(value, dict):
        for key, child in node.get("properties", {}).items():
            if key in value:
                problems += cel_problems(child, value[key], f"{path}.{key}" if path else key)
    if isinstance(value, list) and "items" in node:
        for index, item in enumerate(value):
            problems += cel_problems(node["items"], item, f"{path}[{index}]")
    return problems


def apiserver_problems(document: dict[str, Any], schema: dict[str, Any] | None = None) -> tuple[list[str], list[str]]:
    """(schema errors, CEL rule failures) for `document` sent by kubectl and stored by the API server; the rules
    are not evaluated after a blocking schema error, as on the API server."""
    schema = schema or openapi_schema()
    stored = prune_nulls_and_default(schema, as_kubectl_sends(document))
    errors = schema_errors(schema, stored)
    return errors, ([] if _blocks_cel(schema, stored) else cel_problems(schema, stored))
