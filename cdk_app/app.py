"""cdk synth / cdk deploy entry point: `make synth`, `make deploy`."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import aws_cdk as cdk

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdk_app.nag import add_nag  # noqa: E402
from cdk_app.package import CODE, LAYERS, build_code  # noqa: E402
from cdk_app.stack import SchemahubStack, seeded_products  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# Exchanges that refuse requests from some countries' IPs, cloud regions included (README "Regions").
GEO_BLOCKING = {"binance": ("us-", "HTTP 451 to US addresses")}


def geo_warnings(region: str | None, seed: dict[str, list[str]]) -> list[str]:
    """One line per seeded exchange that refuses the target region's IPs."""
    out = []
    for ex, (prefix, how) in GEO_BLOCKING.items():
        if region and region.startswith(prefix) and seed.get(ex):
            out.append(f"warning: {ex} is seeded but refuses requests from {region} ({how}): its products will fail "
                       f"as geo-blocked; deploy in a region it serves, e.g. eu-west-1 (see README, Regions), or remove "
                       f"{ex} from mappings/product_ids_seed.yaml")
    return out


def pin_first_date(cdk_json: Path = ROOT / "cdk.json") -> str:
    """Write today's date as `first_date` into cdk.json once (the first deploy), so later deploys keep it."""
    doc = json.loads(cdk_json.read_text())
    ctx = doc.setdefault("context", {})
    if not ctx.get("first_date"):
        ctx["first_date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        cdk_json.write_text(json.dumps(doc, indent=2) + "\n")
    return ctx["first_date"]


def build_app(outdir: str | None = None, code_dir: Path | None = None, *, context: dict | None = None,
              stack_name: str = "Schemahub", nag: bool = True) -> tuple[cdk.App, SchemahubStack]:
    """The app and its stack; code_dir is where the Lambda code asset is built (default build/lambda)."""
    app = cdk.App(outdir=outdir or os.environ.get("CDK_OUTDIR", "cdk.out"), context=context)
    ctx = app.node.try_get_context
    code = build_code(code_dir or CODE)
    region = os.environ.get("CDK_DEFAULT_REGION")
    stack = SchemahubStack(
        app, stack_name, code_dir=code, layers_dir=LAYERS,
        schedule_minutes=int(ctx("schedule_minutes") or 30), max_concurrency=int(ctx("max_concurrency") or 10),
        first_date=str(ctx("first_date") or datetime.now(timezone.utc).strftime("%Y-%m-%d")),
        alarm_email=ctx("alarm_email") or None,
        env=cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=region),
    )
    for w in geo_warnings(region, seeded_products()):
        print(w, file=sys.stderr)
        cdk.Annotations.of(stack).add_warning_v2("schemahub:geo-blocked", w)
    if nag:
        add_nag(app, stack)
    return app, stack


if __name__ == "__main__":
    if sys.argv[1:] == ["pin-first-date"]:
        print(f"first_date: {pin_first_date()}")
        sys.exit(0)
    app, _ = build_app()
    app.synth()
