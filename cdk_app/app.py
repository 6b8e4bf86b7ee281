"""cdk synth / cdk deploy entry point: `make synth`, `make deploy`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import aws_cdk as cdk

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdk_app.nag import add_nag  # noqa: E402
from cdk_app.package import CODE, LAYERS, build_code  # noqa: E402
from cdk_app.stack import SchemahubStack  # noqa: E402


def build_app(outdir: str | None = None, code_dir: Path | None = None, *, context: dict | None = None,
              stack_name: str = "Schemahub", nag: bool = True) -> tuple[cdk.App, SchemahubStack]:
    """The app and its stack; code_dir is where the Lambda code asset is built (default build/lambda)."""
    app = cdk.App(outdir=outdir or os.environ.get("CDK_OUTDIR", "cdk.out"), context=context)
    ctx = app.node.try_get_context
    code = build_code(code_dir or CODE)
    stack = SchemahubStack(
        app, stack_name, code_dir=code, layers_dir=LAYERS,
        schedule_minutes=int(ctx("schedule_minutes") or 30), max_concurrency=int(ctx("max_concurrency") or 10),
        env=cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION")),
    )
    if nag:
        add_nag(app, stack)
    return app, stack


if __name__ == "__main__":
    app, _ = build_app()
    app.synth()
