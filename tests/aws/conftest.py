"""One CDK synth per session (5-15 s), shared by every AWS test."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import ROOT

os.environ.setdefault("CDK_DISABLE_CLI_TELEMETRY", "true")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


SYNTH_CONTEXT = {"alarm_email": "ops@example.com", "first_date": "2026-11-01"}


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
    app, stack = build_app(str(out), code_dir=code, context=SYNTH_CONTEXT)
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


# ------------------------------------------------------------------ the AWS rules layer

GEO_BLOCK_BODY = (b'{"code":0,"msg":"Service unavailable from a restricted location according to \'b. Eligibility\' in '
                  b'https://www.binance.com/en/terms. Please contact customer service if you believe you received this '
                  b'message in error."}')
UNSERVED = ("coinbase", "SOL-USD")  # seeded, but the simulated exchange does not list it: that product fails


class World:
    """One deployment of the synthesized stack against moto and the exchange simulators.

    The seed is the packaged one (mappings/product_ids_seed.yaml, from the code asset). Every product is
    simulated except UNSERVED; binance answers 451 (geo-blocked) when `geo_blocked` is set.
    """

    def __init__(self, template, outdir, bucket, endpoint, workdir) -> None:
        import yaml

        from schemahub.sim import SIMS, Book
        from tests.aws.template import Deployment

        self.dep = Deployment(template, outdir, bucket=bucket)
        self.bucket, self.endpoint, self.workdir = bucket, endpoint, workdir
        code = self.dep.asset_dir(self.dep.function_id("handlers.ingest.handler"))
        seed = yaml.safe_load((code / "mappings" / "product_ids_seed.yaml").read_text())["exchanges"]
        self.seed = {ex: [p["product_id"] for p in ps] for ex, ps in seed.items()}
        import time as _t

        t0 = _t.time() - 30
        self.books, self.sims, urls = {}, {}, {}
        k = 0
        for ex, pids in sorted(self.seed.items()):
            books = []
            for pid in pids:
                if (ex, pid) == UNSERVED:
                    continue
                k += 1
                n = 6_000 if (ex, pid) == ("coinbase", "BTC-USD") else 2_000  # a backlog of 6 pages for the slow one
                books.append(Book(pid, first_id=k * 1_000_000, initial=n, interval_us=5_000_000, seed=k, t0=t0))
            self.books[ex] = books
            sim = SIMS[ex](books)
            self.sims[ex] = sim
            urls[ex] = sim.start()
        self.geo_blocked = False
        world = self

        orig_route = self.sims["binance"].route

        def route(segs, q, headers):  # what api.binance.com answers a US IP, on every route
            if world.geo_blocked:
                return 451, {}, GEO_BLOCK_BODY
            return orig_route(segs, q, headers)

        self.sims["binance"].route = route
        self.extra_env = {"AWS_ENDPOINT_URL": endpoint}
        for ex, url in urls.items():
            self.extra_env[f"SCHEMAHUB_{ex.upper()}_BASE_URL"] = url
            self.extra_env[f"SCHEMAHUB_{ex.upper()}_RATE_LIMIT"] = "500"
        self.sandboxes = {}
        self.create_catalog()

    def create_catalog(self) -> None:
        """The template's Glue database and table, in moto (a fresh table: no partitions of an earlier module)."""
        glue = self.glue()
        [db] = resources(self.dep.template, "AWS::Glue::Database").values()
        [table] = resources(self.dep.template, "AWS::Glue::Table").values()
        props = self.dep.resolve(table["Properties"])
        try:
            glue.create_database(DatabaseInput=self.dep.resolve(db["Properties"]["DatabaseInput"]))
        except glue.exceptions.AlreadyExistsException:
            pass
        try:
            glue.delete_table(DatabaseName=props["DatabaseName"], Name=props["TableInput"]["Name"])
        except glue.exceptions.EntityNotFoundException:
            pass
        glue.create_table(DatabaseName=props["DatabaseName"], TableInput=props["TableInput"])
        self.glue_table = (props["DatabaseName"], props["TableInput"]["Name"])

    def glue(self):
        import boto3

        return boto3.client("glue", endpoint_url=self.endpoint, region_name=self.dep.region)

    def partitions(self) -> dict[str, str]:
        """partition path -> Location, as Athena would plan from Glue."""
        from schemahub.layout import partition

        db, name = self.glue_table
        out = {}
        for page in self.glue().get_paginator("get_partitions").paginate(DatabaseName=db, TableName=name):
            for p in page["Partitions"]:
                out[partition(*p["Values"])] = p["StorageDescriptor"]["Location"]
        return out

    def sandbox(self, handler: str):
        from tests.aws.sandbox import LambdaSandbox

        if handler not in self.sandboxes:
            logical = self.dep.function_id(handler)
            self.sandboxes[handler] = LambdaSandbox(self.dep, logical, extra_env=self.extra_env, workdir=self.workdir)
        return self.sandboxes[handler]

    def store(self):
        from schemahub.store import open_store

        return open_store(f"s3://{self.bucket}/schemahub")

    def close(self) -> None:
        for sb in self.sandboxes.values():
            sb.close()
        for sim in self.sims.values():
            sim.stop()


@pytest.fixture(scope="module")
def world(synth, moto_endpoint, tmp_path_factory):
    import uuid

    import boto3

    template, _, out = synth
    bucket = f"schemahub-data-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    w = World(template, out, bucket, moto_endpoint, tmp_path_factory.mktemp("sandbox"))
    yield w
    w.close()
