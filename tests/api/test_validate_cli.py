"""`sloserve validate`: exit 0 on valid files, exit 1 naming every problem's field, never a traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from sloserve_operator.cli import main
from spec_cases import EXAMPLES as EXAMPLE_DOCUMENTS
from spec_cases import MISTAKES, mistaken

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

BROKEN = textwrap.dedent("""\
    apiVersion: sloserve.io/v1alpha1
    kind: ModelService
    metadata: {name: broken}
    spec:
      model: {name: m}
      engine: sglang
      runtime:
        quantization: int8
        speculative: {method: ngram, numTokens: 32}
        maxBatchSise: 8
      resources: {gpus: 0, cpu: two}
      slo:
        ttft: {p95: 500}
        itl: {p95: 50ms}
      scaling: {mode: manual, minReplicas: 4, maxReplicas: 2}
      replicas: -1
      placement:
        regions:
          - {name: us-east-1, weight: 0}
          - {name: us-east-1}
    """)
BROKEN_FIELDS = [
    "spec.runtime.quantization",  # int8 on sglang
    "spec.runtime.speculative.method",  # ngram on sglang
    "spec.runtime.speculative.numTokens",
    "spec.runtime.maxBatchSise",
    "spec.resources.cpu",
    "spec.slo.ttft.p95",
    "spec.scaling.minReplicas",
    "spec.replicas",
    "spec.placement.regions[0].weight",
    "spec.placement.regions",
]
VALID = (EXAMPLES / "quickstart.yaml").read_text()


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_valid_examples_exit_zero(capsys):
    paths = sorted(str(path) for path in EXAMPLES.glob("*.yaml"))
    assert main(["validate", *[arg for path in paths for arg in ("-f", path)]]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.count(": valid") == len(paths)


def test_directory_is_expanded(capsys):
    assert main(["validate", "-f", str(EXAMPLES)]) == 0
    assert "ModelService quickstart: valid" in capsys.readouterr().out


def test_every_problem_is_printed_with_its_field(tmp_path, capsys):
    path = write(tmp_path, "broken.yaml", BROKEN)
    assert main(["validate", "-f", path]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    prefix = f"{path}: ModelService broken: "
    assert all(line.startswith(prefix) for line in lines), lines
    fields = {line.removeprefix(prefix).split(": ", 1)[0] for line in lines}
    assert fields == set(BROKEN_FIELDS)
    assert f"{prefix}spec.runtime.maxBatchSise: unknown field (check its spelling and indentation)" in lines


def test_one_bad_document_among_good_ones(tmp_path, capsys):
    second = VALID.replace("name: quickstart", "name: second").replace("maxReplicas: 3", "maxReplicas: 0")
    path = write(tmp_path, "two.yaml", VALID + "---\n" + second)
    assert main(["validate", "-f", path]) == 1
    out, err = capsys.readouterr()
    assert "ModelService quickstart: valid" in out
    assert f"{path}: ModelService second: spec.scaling.maxReplicas: Input should be greater than or equal to 1" in err


def test_other_kinds_are_skipped_but_some_modelservice_is_required(tmp_path, capsys):
    deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {}\n"
    mixed = write(tmp_path, "mixed.yaml", deployment + "---\n" + VALID)
    assert main(["validate", "-f", mixed]) == 0
    assert "Deployment" not in capsys.readouterr().err
    only_other = write(tmp_path, "deploy.yaml", deployment)
    assert main(["validate", "-f", only_other]) == 1
    assert "no ModelService documents" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "expected"), [
    ("spec: [unclosed\n", "cannot read"),
    ("- just\n- a list\n", "document #1: document: expected a mapping"),
    ("apiVersion: sloserve.io/v1alpha1\nkind: ModelService\nspec: {}\n", "metadata: required field is missing"),
])
def test_unreadable_and_malformed_files(tmp_path, capsys, text, expected):
    assert main(["validate", "-f", write(tmp_path, "bad.yaml", text)]) == 1
    assert expected in capsys.readouterr().err


def test_missing_file(tmp_path, capsys):
    assert main(["validate", "-f", str(tmp_path / "absent.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_console_script_reads_stdin():
    """The installed entry point, as a GitOps pipeline runs it: `... | sloserve validate -f -`."""
    command = [sys.executable, "-m", "sloserve_operator.cli", "validate", "-f", "-"]
    result = subprocess.run(command, input=VALID + "---\n" + BROKEN, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "-: ModelService quickstart: valid" in result.stdout
    assert "-: ModelService broken: spec.scaling.minReplicas: must not exceed maxReplicas" in result.stderr


@pytest.mark.parametrize(("field", "value"), MISTAKES, ids=[f"{p}={v!r}"[:60] for p, v in MISTAKES])
def test_each_kind_of_mistake_gets_a_line_naming_its_field(tmp_path, capsys, field, value):
    """Through YAML, as a GitOps pre-flight reads it: exit 1, one line per problem, the field first, no
    pydantic internals (class names, URLs) in the words."""
    document = mistaken(EXAMPLE_DOCUMENTS["chat-gpu"], field, value)
    path = write(tmp_path, "mistake.yaml", yaml.safe_dump(document, allow_unicode=True, sort_keys=False))
    assert main(["validate", "-f", path]) == 1
    out, err = capsys.readouterr()
    prefix = f"{path}: ModelService {document['metadata']['name']}: "
    lines = err.splitlines()
    assert out == "" and lines and all(line.startswith(prefix) for line in lines), err
    problems = dict(line.removeprefix(prefix).split(": ", 1) for line in lines)
    assert field in problems, problems
    for message in problems.values():
        assert message and not any(word in message for word in ("instance of", "pydantic", "Traceback")), message
