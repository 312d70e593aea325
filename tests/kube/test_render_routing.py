"""spec.routing: InferencePool (inference.networking.k8s.io/v1) and HTTPRoute (gateway.networking.k8s.io/v1)
rendering, checked offline against those APIs' published field names, required fields and validations.

The shapes below were written from the v1 API of kubernetes-sigs/gateway-api-inference-extension
(api/v1/inferencepool_types.go and its generated CRD: spec requires selector.matchLabels and 1..8 targetPorts
with unique numbers in 1..65535; endpointPickerRef requires name, and a port when its kind is Service;
failureMode FailOpen|FailClose; appProtocol http|kubernetes.io/h2c) and from Gateway API v1 HTTPRoute
(parentRefs, hostnames, rules[].matches[].path, rules[].backendRefs[] with group/kind/name). Unknown fields
are refused (additionalProperties: false), so a misspelt field fails.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError
from sloserve_operator.api.spec import ModelService, parse_spec
from sloserve_operator.kube import client
from sloserve_operator.kube.render import render_objects

_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
_LABEL_VALUE = {"type": "string", "maxLength": 63, "pattern": r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"}
_PORT = {"type": "object", "additionalProperties": False, "required": ["number"],
         "properties": {"number": {"type": "integer", "minimum": 1, "maximum": 65535}}}
_METADATA = {"type": "object", "required": ["name", "namespace"], "properties": {
    "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 63},
    "namespace": {"type": "string"}, "labels": {"type": "object", "additionalProperties": _LABEL_VALUE},
    "ownerReferences": {"type": "array"}}}

INFERENCE_POOL = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "inference.networking.k8s.io/v1"}, "kind": {"const": "InferencePool"},
        "metadata": _METADATA,
        "spec": {"type": "object", "additionalProperties": False, "required": ["selector", "targetPorts"],
                 "properties": {
                     "selector": {"type": "object", "additionalProperties": False, "required": ["matchLabels"],
                                  "properties": {"matchLabels": {"type": "object", "minProperties": 1,
                                                                 "additionalProperties": _LABEL_VALUE}}},
                     "targetPorts": {"type": "array", "minItems": 1, "maxItems": 8, "items": _PORT},
                     "appProtocol": {"enum": ["http", "kubernetes.io/h2c"]},
                     "endpointPickerRef": {
                         "type": "object", "additionalProperties": False, "required": ["name"], "properties": {
                             "group": {"type": "string", "maxLength": 253,
                                       "pattern": r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"},
                             "kind": {"type": "string", "maxLength": 63, "pattern": r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"},
                             "name": _NAME, "port": _PORT, "failureMode": {"enum": ["FailOpen", "FailClose"]}}}}}}}

_PARENT = {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {
    "group": {"type": "string"}, "kind": {"type": "string"}, "name": _NAME, "namespace": {"type": "string"},
    "sectionName": {"type": "string"}, "port": {"type": "integer"}}}
HTTP_ROUTE = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"}, "kind": {"const": "HTTPRoute"},
        "metadata": _METADATA,
        "spec": {"type": "object", "additionalProperties": False, "properties": {
            "parentRefs": {"type": "array", "minItems": 1, "maxItems": 32, "items": _PARENT},
            "hostnames": {"type": "array", "maxItems": 16, "items": {"type": "string"}},
            "rules": {"type": "array", "minItems": 1, "maxItems": 16, "items": {
                "type": "object", "additionalProperties": False, "properties": {
                    "matches": {"type": "array", "maxItems": 64, "items": {
                        "type": "object", "additionalProperties": False, "properties": {
                            "path": {"type": "object", "additionalProperties": False, "properties": {
                                "type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
                                "value": {"type": "string", "pattern": "^/"}}}}}},
                    "backendRefs": {"type": "array", "maxItems": 16, "items": {
                        "type": "object", "additionalProperties": False, "required": ["name"], "properties": {
                            "group": {"type": "string"}, "kind": {"type": "string"}, "name": _NAME,
                            "namespace": {"type": "string"}, "port": {"type": "integer"},
                            "weight": {"type": "integer"}}}}}}}}}}}


def check_pool(pool: dict[str, Any]) -> None:
    jsonschema.validate(pool, INFERENCE_POOL)
    numbers = [port["number"] for port in pool["spec"]["targetPorts"]]
    assert len(numbers) == len(set(numbers)), "targetPorts numbers must be unique (the CRD's CEL rule)"
    ref = pool["spec"].get("endpointPickerRef")
    if ref is not None:
        assert ref.get("kind", "Service") != "Service" or "port" in ref, "a Service endpoint picker needs a port"


def check_route(route: dict[str, Any]) -> None:
    jsonschema.validate(route, HTTP_ROUTE)
    for rule in route["spec"]["rules"]:
        for ref in rule.get("backendRefs", []):
            # Gateway API CEL: a Service backend (core group) needs a port; other kinds need none.
            if ref.get("group", "") == "" and ref.get("kind", "Service") == "Service":
                assert "port" in ref


def service(spec_extra: dict[str, Any], name: str = "chat", uid: str | None = "u-1") -> ModelService:
    spec = {"model": {"name": "m"}, "slo": {"ttft": {"p95": "500ms"}, "itl": {"p95": "50ms"}}, **spec_extra}
    metadata: dict[str, Any] = {"name": name, "namespace": "prod", **({"uid": uid} if uid else {})}
    return ModelService.model_validate({"apiVersion": "sloserve.io/v1alpha1", "kind": "ModelService",
                                        "metadata": metadata, "spec": spec})


ROUTING = {"endpointPicker": {"name": "chat-epp"}}
REGIONS = {"regions": [{"name": "us-east-1", "weight": 3}, {"name": "eu-west-1"}]}


def kinds(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def test_without_routing_nothing_of_the_gateway_api_is_rendered() -> None:
    objects = render_objects(service({}), {"default": 1})
    assert not kinds(objects, "InferencePool") and not kinds(objects, "HTTPRoute")


def test_one_pool_over_the_serving_pods_naming_its_endpoint_picker() -> None:
    objects = render_objects(service({"routing": ROUTING}), {"default": 2})
    [pool] = kinds(objects, "InferencePool")
    check_pool(pool)
    assert pool["metadata"]["name"] == "chat"
    [svc] = [obj for obj in kinds(objects, "Service") if obj["metadata"]["name"] == "chat"]
    assert pool["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]  # the serving pods, as the Service
    assert pool["spec"]["selector"]["matchLabels"]["sloserve.io/role"] == "serving"
    [deployment] = kinds(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    http_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
    assert pool["spec"]["targetPorts"] == [{"number": http_port}]
    assert pool["spec"]["endpointPickerRef"] == {"group": "", "kind": "Service", "name": "chat-epp",
                                                 "port": {"number": 9002}, "failureMode": "FailClose"}
    assert pool["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert not kinds(objects, "HTTPRoute")


def test_a_pool_per_region_and_one_over_all_of_them() -> None:
    objects = render_objects(service({"routing": ROUTING, "placement": REGIONS}), {"us-east-1": 1, "eu-west-1": 1})
    pools = {pool["metadata"]["name"]: pool for pool in kinds(objects, "InferencePool")}
    assert set(pools) == {"chat", "chat-us-east-1", "chat-eu-west-1"}
    for pool in pools.values():
        check_pool(pool)
    assert "sloserve.io/region" not in pools["chat"]["spec"]["selector"]["matchLabels"]
    assert pools["chat-eu-west-1"]["spec"]["selector"]["matchLabels"]["sloserve.io/region"] == "eu-west-1"
    assert pools["chat-eu-west-1"]["spec"]["endpointPickerRef"]["name"] == "chat-epp-eu-west-1"


def test_http_route_sends_the_gateway_traffic_to_the_pool() -> None:
    routing = {**ROUTING, "httpRoute": {"gateways": [{"name": "inference-gateway", "namespace": "gw",
                                                      "sectionName": "http"}],
                                        "hostnames": ["chat.example.com"], "path": "/v1"}}
    objects = render_objects(service({"routing": routing}), {"default": 1})
    [route] = kinds(objects, "HTTPRoute")
    check_route(route)
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                            "name": "inference-gateway", "namespace": "gw", "sectionName": "http"}]
    assert route["spec"]["hostnames"] == ["chat.example.com"]
    [rule] = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/v1"}}]
    assert rule["backendRefs"] == [{"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "chat"}]


def test_the_shape_check_is_not_vacuous() -> None:
    [pool] = kinds(render_objects(service({"routing": ROUTING}), {"default": 1}), "InferencePool")
    pool["spec"]["targetPortNumber"] = 8000  # the v1alpha2 field name, gone in v1
    with pytest.raises(jsonschema.ValidationError):
        check_pool(pool)
    del pool["spec"]["targetPortNumber"]
    del pool["spec"]["endpointPickerRef"]["port"]
    with pytest.raises(AssertionError):
        check_pool(pool)


def test_failure_mode_and_port_come_from_the_spec_and_bad_values_are_refused() -> None:
    routing = {"endpointPicker": {"name": "epp", "port": 9443, "failureMode": "FailOpen"}}
    [pool] = kinds(render_objects(service({"routing": routing}), {"default": 1}), "InferencePool")
    assert pool["spec"]["endpointPickerRef"]["port"] == {"number": 9443}
    assert pool["spec"]["endpointPickerRef"]["failureMode"] == "FailOpen"
    base = {"model": {"name": "m"}, "slo": {"ttft": {"p95": "1s"}, "itl": {"p95": "50ms"}}}
    for bad in ({"endpointPicker": {"name": "epp", "failureMode": "Sometimes"}},
                {"endpointPicker": {"name": "Bad_Name"}},
                {"endpointPicker": {"name": "epp", "port": 0}},
                {"endpointPicker": {"name": "epp"}, "httpRoute": {"gateways": []}}, {}):
        with pytest.raises((ValidationError, ValueError)):
            parse_spec({**base, "routing": bad})


def test_the_client_knows_the_new_kinds() -> None:
    assert client.KINDS["InferencePool"].plural == "inferencepools"
    assert client.KINDS["HTTPRoute"].plural == "httproutes"


def test_chart_grants_the_gateway_kinds_only_when_routing_is_enabled() -> None:
    from sloserve_operator.kube import manifests

    def granted(values: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
        roles = [obj for obj in manifests.render_chart(values) if obj["kind"] in ("ClusterRole", "Role")]
        return {(group, resource): set(rule["verbs"]) for role in roles for rule in role["rules"]
                for group in rule["apiGroups"] for resource in rule["resources"]}

    default = granted({})
    assert ("inference.networking.k8s.io", "inferencepools") not in default
    assert ("gateway.networking.k8s.io", "httproutes") not in default
    for values in ({"routing": {"enabled": True}},
                   {"routing": {"enabled": True}, "watchNamespaces": ["team-a"]}):
        enabled = granted(values)
        for key in (("inference.networking.k8s.io", "inferencepools"), ("gateway.networking.k8s.io", "httproutes")):
            assert enabled[key] == {"get", "list", "create", "patch", "delete"}  # no watch, no wildcard
        assert ("gateway.networking.k8s.io", "gateways") not in enabled  # routes attach; gateways are not ours
