"""One CDK synth per session (5-15 s), shared by every AWS test."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import ROOT

os.environ.setdefault("CDK_DISABLE_CLI_TELEMETRY", "true")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """(template dict, stack, cdk.out path). Synthesis runs the cdk-nag plugin: unacknowledged findings fail it."""
    import sys

    from cdk_app.package import LAYERS

    for layer in ("core", "arrow"):
        assert (LAYERS / layer / "python").is_dir(), f"{LAYERS / layer} is missing: run `make layers`"
    sys.path.insert(0, str(ROOT))
    from cdk_app.app import build_app

    out = tmp_path_factory.mktemp("cdk.out")
    code = tmp_path_factory.mktemp("lambda") / "code"  # private to this session: no shared build folder
    app, stack = build_app(str(out), code_dir=code)
    app.synth()
    template = json.loads((out / "Schemahub.template.json").read_text())
    stack.code_dir = code
    return template, stack, out


def resolve(value, arns: dict[str, str]):
    """Resolve Fn::Join / Fn::GetAtt tokens of a state machine definition to plain text."""
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(resolve(p, arns) for p in parts)
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return arns[value["Fn::GetAtt"][0]]
    if isinstance(value, dict) and "Ref" in value:
        return arns.get(value["Ref"], value["Ref"])
    return value


def resources(template: dict, type_: str) -> dict:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def state_machine(template: dict) -> tuple[dict, dict[str, str]]:
    """The definition as a dict, and logical function id -> fake ARN used in it."""
    fns = resources(template, "AWS::Lambda::Function")
    arns = {k: f"arn:aws:lambda:us-east-1:123456789012:function:{k}" for k in fns}
    [sm] = resources(template, "AWS::StepFunctions::StateMachine").values()
    return json.loads(resolve(sm["Properties"]["DefinitionString"], arns)), arns
