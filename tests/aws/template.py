"""The synthesized template as one deployment would see it: every token resolved to a physical name or ARN.

A `Deployment` fixes the account, region and the names CloudFormation would give each resource (the
bucket is the test's moto bucket). From it come each function's role statements, its environment, its
code asset and layers in cdk.out, the state machine definition, the queue and bucket policies, and what
the dashboard and the alarms read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

ACCOUNT = "123456789012"
REGION = "eu-west-1"
PARTITION = "aws"


def resources(template: dict, type_: str) -> dict:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


@dataclass
class Deployment:
    template: dict
    outdir: Path | None = None
    bucket: str = "schemahub-data"
    account: str = ACCOUNT
    region: str = REGION
    names: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for logical, res in self.template["Resources"].items():
            if res["Type"] == "AWS::S3::Bucket" and "Data" in logical:
                self.names.setdefault(logical, self.bucket)
            self.names.setdefault(logical, logical)

    # ------------------------------------------------------------ tokens
    def _type(self, logical: str) -> str:
        return self.template["Resources"][logical]["Type"]

    def ref(self, logical: str) -> str:
        pseudo = {"AWS::Partition": PARTITION, "AWS::Region": self.region, "AWS::AccountId": self.account,
                  "AWS::URLSuffix": "amazonaws.com", "AWS::StackName": "Schemahub", "AWS::NoValue": None}
        if logical in pseudo:
            return pseudo[logical]
        if logical in self.template.get("Parameters", {}):
            return self.template["Parameters"][logical].get("Default", logical)
        t, name = self._type(logical), self.names[logical]
        if t == "AWS::SQS::Queue":
            return f"https://sqs.{self.region}.amazonaws.com/{self.account}/{name}"
        if t == "AWS::SNS::Topic":
            return f"arn:aws:sns:{self.region}:{self.account}:{name}"
        if t == "AWS::StepFunctions::StateMachine":
            return f"arn:aws:states:{self.region}:{self.account}:stateMachine:{name}"
        if t == "AWS::Glue::Database":
            return self.template["Resources"][logical]["Properties"]["DatabaseInput"]["Name"]
        if t == "AWS::Athena::WorkGroup":
            return self.template["Resources"][logical]["Properties"]["Name"]
        if t == "AWS::Lambda::LayerVersion":
            return f"arn:aws:lambda:{self.region}:{self.account}:layer:{name}:1"
        return name

    def att(self, logical: str, attr: str) -> str:
        t, name = self._type(logical), self.names[logical]
        arns = {
            "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
            "AWS::Lambda::Function": f"arn:aws:lambda:{self.region}:{self.account}:function:{name}",
            "AWS::SQS::Queue": f"arn:aws:sqs:{self.region}:{self.account}:{name}",
            "AWS::IAM::Role": f"arn:aws:iam::{self.account}:role/{name}",
            "AWS::Logs::LogGroup": f"arn:aws:logs:{self.region}:{self.account}:log-group:{name}:*",
            "AWS::StepFunctions::StateMachine": f"arn:aws:states:{self.region}:{self.account}:stateMachine:{name}",
            "AWS::SNS::Topic": f"arn:aws:sns:{self.region}:{self.account}:{name}",
        }
        if attr == "Arn" and t in arns:
            return arns[t]
        if attr in ("QueueName", "Name", "TopicName"):
            return name
        if attr == "QueueUrl":
            return self.ref(logical)
        raise KeyError(f"GetAtt {logical}.{attr} ({t}) is not modelled")

    def resolve(self, value):
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (k, v), = value.items()
            if k == "Ref":
                return self.ref(v)
            if k == "Fn::GetAtt":
                return self.att(*(v if isinstance(v, list) else v.split(".", 1)))
            if k == "Fn::Join":
                sep, parts = v
                return sep.join(str(self.resolve(p)) for p in parts)
            if k == "Fn::Select":
                i, lst = v
                return self.resolve(lst)[int(i)]
            if k == "Fn::Split":
                sep, s = v
                return str(self.resolve(s)).split(sep)
            if k == "Fn::Sub":
                text = v if isinstance(v, str) else v[0]
                for var in ("AWS::Partition", "AWS::Region", "AWS::AccountId", "AWS::URLSuffix"):
                    text = text.replace("${" + var + "}", self.ref(var))
                return text
        return {k: self.resolve(v) for k, v in value.items()}

    # ------------------------------------------------------------ functions
    def function_id(self, handler: str) -> str:
        [k] = [k for k, v in resources(self.template, "AWS::Lambda::Function").items()
               if v["Properties"].get("Handler") == handler]
        return k

    def function(self, logical: str) -> dict:
        return self.template["Resources"][logical]["Properties"]

    def function_arn(self, logical: str) -> str:
        return self.att(logical, "Arn")

    def role_of(self, logical: str) -> str:
        return self.function(logical)["Role"]["Fn::GetAtt"][0]

    def role_statements(self, role: str) -> list[dict]:
        """Every statement the role's inline and attached policies grant (managed policies by their known content)."""
        out = []
        props = self.template["Resources"][role]["Properties"]
        for pol in props.get("Policies", []):
            out += _listify(self.resolve(pol["PolicyDocument"])["Statement"])
        for pol in resources(self.template, "AWS::IAM::Policy").values():
            if {"Ref": role} in pol["Properties"].get("Roles", []):
                out += _listify(self.resolve(pol["Properties"]["PolicyDocument"])["Statement"])
        for arn in self.resolve(props.get("ManagedPolicyArns", [])):
            out += MANAGED[arn.split(":policy/", 1)[1]]
        return out

    def environment(self, logical: str) -> dict[str, str]:
        return {k: str(v) for k, v in self.resolve(self.function(logical).get("Environment", {}).get("Variables", {})).items()}

    def asset_dir(self, logical: str) -> Path:
        """The folder cdk.out staged for a function's code or a layer's content (what `cdk deploy` zips)."""
        assert self.outdir is not None
        props = self.template["Resources"][logical]["Properties"]
        key = (props.get("Code") or props.get("Content"))["S3Key"]  # <asset hash>.zip
        path = self.outdir / f"asset.{key.removesuffix('.zip')}"
        assert path.is_dir(), f"{path} is not in cdk.out"
        return path

    def layer_dirs(self, logical: str) -> list[Path]:
        out = []
        for layer in self.function(logical).get("Layers", []):
            out.append(self.asset_dir(layer["Ref"]))
        return out

    # ------------------------------------------------------------ the rest
    def state_machine(self) -> tuple[str, dict]:
        [(k, sm)] = resources(self.template, "AWS::StepFunctions::StateMachine").items()
        return k, json.loads(self.resolve(sm["Properties"]["DefinitionString"]))

    def resource_policy(self, type_: str, target_key: str, logical: str) -> list[dict]:
        out = []
        for pol in resources(self.template, type_).values():
            targets = _listify(pol["Properties"][target_key])
            if {"Ref": logical} in targets:
                out += _listify(self.resolve(pol["Properties"]["PolicyDocument"])["Statement"])
        return out

    def bucket_id(self) -> str:
        [k] = [k for k, v in resources(self.template, "AWS::S3::Bucket").items() if "Data" in k]
        return k

    def bucket_policy(self) -> list[dict]:
        out = []
        for pol in resources(self.template, "AWS::S3::BucketPolicy").values():
            if pol["Properties"]["Bucket"] == {"Ref": self.bucket_id()}:
                out += _listify(self.resolve(pol["Properties"]["PolicyDocument"])["Statement"])
        return out

    def dashboard(self) -> dict:
        [d] = resources(self.template, "AWS::CloudWatch::Dashboard").values()
        return json.loads(self.resolve(d["Properties"]["DashboardBody"]))

    def alarms(self) -> dict[str, dict]:
        return {k: self.resolve(v["Properties"]) for k, v in resources(self.template, "AWS::CloudWatch::Alarm").items()}


def _listify(v) -> list:
    return v if isinstance(v, list) else [v]


# What AWS's managed policies grant (only the ones the stack attaches).
MANAGED = {
    "service-role/AWSLambdaBasicExecutionRole": [
        {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": "*"}],
}


# ------------------------------------------------------------------ metrics readers

@dataclass(frozen=True)
class MetricRef:
    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]  # sorted (name, value) pairs: CloudWatch matches the exact set

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}{dict(self.dimensions)}"


def dashboard_metrics(body: dict) -> list[tuple[str, MetricRef]]:
    """(widget title, metric) for every metric a dashboard graph reads."""
    out = []
    for w in body["widgets"]:
        props = w.get("properties", {})
        for row in props.get("metrics", []):
            row = [x for x in row if not isinstance(x, dict)]
            if not row or row[0] == "...":
                continue
            ns, name, *dims = row
            out.append((props.get("title", ""), MetricRef(ns, name, tuple(sorted(zip(dims[::2], dims[1::2]))))))
    return out


def alarm_metrics(alarm: dict) -> list[MetricRef]:
    """Every metric an alarm reads, directly or through metric math."""
    def ref(ns, name, dims):
        return MetricRef(ns, name, tuple(sorted((d["Name"], d["Value"]) for d in dims or [])))

    if "MetricName" in alarm:
        return [ref(alarm["Namespace"], alarm["MetricName"], alarm.get("Dimensions"))]
    out = []
    for q in alarm.get("Metrics", []):
        if "MetricStat" in q:
            m = q["MetricStat"]["Metric"]
            out.append(ref(m["Namespace"], m["MetricName"], m.get("Dimensions")))
    return out


def emf_metrics(lines: list[str]) -> list[tuple[MetricRef, float]]:
    """(metric, value) for every datum in CloudWatch embedded-metric-format lines (what Lambda's log agent extracts)."""
    out = []
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if not isinstance(doc, dict) or "_aws" not in doc:
            continue
        for d in doc["_aws"]["CloudWatchMetrics"]:
            for dimset in d["Dimensions"]:
                dims = tuple(sorted((k, str(doc[k])) for k in dimset))
                for m in d["Metrics"]:
                    for v in _listify(doc[m["Name"]]):
                        out.append((MetricRef(d["Namespace"], m["Name"], dims), float(v)))
    return out
