"""A Lambda sandbox's runtime loop, run by tests/aws/sandbox.py as `python3.12 -I -S lambda_runtime.py`.

Like the Python 3.12 runtime: sys.path is the code asset (/var/task), then the layers (/opt/python), then the
standard library. Nothing from the test virtualenv is importable, so a module missing from the package or a
layer fails here as it would in AWS. Every AWS SDK call is evaluated against the function's own role policies
(tests/aws/iam.py) before it is sent: a denied call answers 403 AccessDenied as AWS does, and a GetObject or
HeadObject of a missing key answers 403 unless the role may list the bucket.

Protocol: one JSON request per line on stdin, one JSON reply per line on the original stdout. What the
function prints (logs, EMF metrics) is captured per invocation and returned in the reply.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import os
import sys
import time
import traceback

CONFIG = json.loads(open(os.environ.pop("SANDBOX_CONFIG")).read())
_proto = os.fdopen(os.dup(1), "w", buffering=1)


class _Capture(io.TextIOBase):
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, s: str) -> int:
        self.parts.append(s)
        return len(s)

    def drain(self) -> list[str]:
        text, self.parts = "".join(self.parts), []
        return [line for line in text.splitlines() if line.strip()]

    def isatty(self) -> bool:
        return False


_out = _Capture()
sys.stdout = _out

sys.path[:0] = [CONFIG["task_root"], *CONFIG["layers"]]

_spec = importlib.util.spec_from_file_location("sandbox_iam", CONFIG["iam_module"])
iam = importlib.util.module_from_spec(_spec)
sys.modules["sandbox_iam"] = iam
_spec.loader.exec_module(iam)

import boto3  # noqa: E402  (from the layer)
import botocore  # noqa: E402
from botocore.awsrequest import AWSResponse  # noqa: E402

STATEMENTS = CONFIG["statements"]
BUCKET_POLICY = CONFIG["bucket_policy"]
ROLE_ARN = CONFIG["role_arn"]
_calls: list[dict] = []
_admin = boto3.session.Session().client("s3", region_name=os.environ["AWS_REGION"])  # unhooked: S3's own view


def _keep_params(params, context, **_):
    context["sandbox_api_params"] = dict(params)


def _denied(code: str, message: str, status: int = 403):
    return AWSResponse("https://sandbox.invalid", status, {}, None), {
        "Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}}}


def _check(model, context, **_):
    service = model.service_model.service_name
    op = model.name
    params = context.get("sandbox_api_params", {})
    if service == "s3":
        req = iam.s3_request(op, params)
        d = iam.decide(STATEMENTS, req.action, req.resource, req.context)
        if d.allowed:
            deny = iam.decide([s for s in BUCKET_POLICY if s.get("Effect") == "Deny"], req.action, req.resource,
                              req.context, principal={"AWS": ROLE_ARN})
            if not deny.allowed and "explicitly" in deny.reason:
                d = deny
        entry = {"service": service, "op": op, "action": req.action, "resource": req.resource,
                 "allowed": d.allowed, "reason": d.reason}
        if d.allowed and req.reads_key and not iam.may_learn_absence(STATEMENTS, params["Bucket"]):
            try:
                _admin.head_object(Bucket=params["Bucket"], Key=params["Key"])
            except botocore.exceptions.ClientError as e:
                if e.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                    entry.update(allowed=False, reason="missing key without s3:ListBucket on the bucket: S3 answers 403")
        _calls.append(entry)
        if not entry["allowed"]:
            return _denied("AccessDenied", f"User: {ROLE_ARN} is not authorized to perform: {req.action} on resource: "
                                           f"{req.resource} ({entry['reason']})")
        return None
    if service == "glue":
        req = iam.glue_request(op, params, region=os.environ["AWS_REGION"], account=ROLE_ARN.split(":")[4])
        d = iam.decide_all(STATEMENTS, req.action, req.resources)
        _calls.append({"service": service, "op": op, "action": req.action, "resource": req.resources,
                       "allowed": d.allowed, "reason": d.reason})
        return None if d.allowed else _denied("AccessDeniedException", f"User: {ROLE_ARN} is not authorized to "
                                              f"perform: {req.action} ({d.reason})", 400)
    action = f"{service}:{op}"
    d = iam.decide(STATEMENTS, action, "*", {})
    _calls.append({"service": service, "op": op, "action": action, "resource": "*", "allowed": d.allowed,
                   "reason": d.reason})
    return None if d.allowed else _denied("AccessDeniedException", f"{ROLE_ARN} may not {action}", 400)


boto3.setup_default_session()
boto3.DEFAULT_SESSION.events.register("before-parameter-build", _keep_params)
boto3.DEFAULT_SESSION.events.register("before-call", _check)


class Context:
    def __init__(self, req: dict) -> None:
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
        self.invoked_function_arn = CONFIG["function_arn"]
        self.aws_request_id = req["request_id"]
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "sandbox"
        self._deadline = time.monotonic() + req["remaining_ms"] / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> None:
    module, func = CONFIG["handler"].rsplit(".", 1)
    t0 = time.monotonic()
    try:
        handler = getattr(importlib.import_module(module), func)
        init_error = None
    except Exception as e:  # noqa: BLE001 - an INIT failure is reported on every invoke, as Lambda does
        handler, init_error = None, {"errorType": "Runtime.ImportModuleError", "errorMessage": f"{type(e).__name__}: {e}",
                                     "trace": traceback.format_exc()}
    init_s = time.monotonic() - t0
    for line in sys.stdin:
        req = json.loads(line)
        _calls.clear()
        reply = {"init_s": init_s}
        init_s = 0.0
        if init_error:
            reply["error"] = init_error
        else:
            try:
                reply["result"] = handler(req["event"], Context(req))
            except Exception as e:  # noqa: BLE001 - Lambda reports the error type and message to the caller
                reply["error"] = {"errorType": type(e).__name__, "errorMessage": str(e), "trace": traceback.format_exc()}
        reply["stdout"] = _out.drain()
        reply["calls"] = list(_calls)
        reply["modules"] = {m: getattr(sys.modules[m], "__file__", None) for m in ("boto3", "botocore", "pyarrow")
                            if m in sys.modules}
        _proto.write(json.dumps(reply, default=str) + "\n")


if __name__ == "__main__":
    main()
