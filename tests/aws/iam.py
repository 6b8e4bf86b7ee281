"""An IAM policy evaluator for the AWS rules layer (stdlib only: it also runs inside the Lambda sandbox).

It models what the suite relies on, as AWS documents it:
- identity policies: default deny, an Allow statement grants, an explicit Deny wins
  (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html);
- Action / NotAction / Resource / NotResource with `*` and `?` wildcards (actions case-insensitive);
- conditions: String*, Arn*, Bool, Numeric*, Null, with `...IfExists` and `ForAnyValue:` / `ForAllValues:`.
  Values in one condition are ORed, operators and keys ANDed. A key missing from the request makes a
  condition false, except the negated operators (StringNotLike, ArnNotEquals, ...), which are then true;
- S3's existence rule (GetObject / HeadObject "Permissions"): a missing key answers 404 only if the caller
  has s3:ListBucket on the bucket, else 403 AccessDenied. S3 checks ListBucket for a GetObject request, which
  carries no s3:prefix, so a ListBucket granted only under an s3:prefix condition does not disclose absence
  (the reading of the issue, and the safe one: a stack that passes works whichever way S3 decides it).

Statements are plain dicts with every CloudFormation token already resolved (tests/aws/template.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NEGATED = ("StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "ArnNotEquals", "ArnNotLike",
            "NumericNotEquals")


def _glob(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    # IAM wildcards are * and ? only: [...] has no meaning (unlike fnmatch).
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL) is not None


def _listify(v) -> list:
    return v if isinstance(v, list) else [v]


def _compare(op: str, want: str, have: str) -> bool:
    base = op.removesuffix("IfExists")
    if base in ("StringEquals", "StringNotEquals", "ArnEquals", "ArnNotEquals"):
        eq = want == have
    elif base in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
        eq = want.lower() == have.lower()
    elif base in ("StringLike", "StringNotLike", "ArnLike", "ArnNotLike"):
        eq = _glob(want, have)
    elif base == "Bool":
        eq = str(want).lower() == str(have).lower()
    elif base.startswith("Numeric"):
        a, b = float(have), float(want)
        eq = {"NumericEquals": a == b, "NumericNotEquals": a == b, "NumericLessThan": a < b,
              "NumericLessThanEquals": a <= b, "NumericGreaterThan": a > b,
              "NumericGreaterThanEquals": a >= b}[base]
    else:
        raise ValueError(f"condition operator {op} is not modelled")
    return eq


def condition_holds(op: str, key: str, wanted, context: dict) -> bool:
    qualifier, _, op = op.rpartition(":")
    wanted = [str(w) if not isinstance(w, bool) else str(w).lower() for w in _listify(wanted)]
    base = op.removesuffix("IfExists")
    negated = base in _NEGATED
    if base == "Null":
        missing = key not in context
        return any((w == "true") == missing for w in wanted)
    if key not in context:
        if op.endswith("IfExists") or qualifier == "ForAllValues":
            return True
        return negated
    have = [str(h) if not isinstance(h, bool) else str(h).lower() for h in _listify(context[key])]

    def one(h: str) -> bool:
        hit = any(_compare(op, w, h) for w in wanted)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(one(h) for h in have)
    return any(one(h) for h in have)


def _matches(stmt: dict, action: str, resource: str, context: dict) -> bool:
    if "Action" in stmt:
        if not any(_glob(a, action, ignore_case=True) for a in _listify(stmt["Action"])):
            return False
    elif any(_glob(a, action, ignore_case=True) for a in _listify(stmt.get("NotAction", []))):
        return False
    if "Resource" in stmt:
        if not any(_glob(r, resource) for r in _listify(stmt["Resource"])):
            return False
    elif any(_glob(r, resource) for r in _listify(stmt.get("NotResource", []))):
        return False
    for op, keys in (stmt.get("Condition") or {}).items():
        for key, wanted in keys.items():
            if not condition_holds(op, key, wanted, context):
                return False
    return True


def _principal_matches(stmt: dict, principal: dict | None) -> bool:
    p = stmt.get("Principal")
    if p is None:  # identity policy
        return True
    if p == "*" or principal is None:
        return p == "*"
    for kind, values in p.items():
        for v in _listify(values):
            if v == "*" or v in _listify(principal.get(kind, [])):
                return True
    return False


@dataclass
class Decision:
    allowed: bool
    reason: str


def decide(statements: list[dict], action: str, resource: str, context: dict | None = None,
           principal: dict | None = None) -> Decision:
    """Allow or deny one request, with the statement that decided it."""
    context = context or {}
    allow = None
    for stmt in statements:
        if not _principal_matches(stmt, principal) or not _matches(stmt, action, resource, context):
            continue
        if stmt.get("Effect") == "Deny":
            return Decision(False, f"explicitly denied by {stmt.get('Sid') or stmt}")
        allow = allow or stmt
    if allow is not None:
        return Decision(True, f"allowed by {allow.get('Sid') or allow}")
    return Decision(False, f"no statement allows {action} on {resource}")


def allowed(statements, action, resource, context=None, principal=None) -> bool:
    return decide(statements, action, resource, context, principal).allowed


# ------------------------------------------------------------------ S3 requests as IAM sees them

@dataclass
class S3Request:
    """What IAM evaluates for one S3 API call."""

    action: str
    resource: str
    context: dict = field(default_factory=dict)
    reads_key: bool = False  # GetObject/HeadObject: subject to the existence rule


S3_ACTIONS = {
    "GetObject": "s3:GetObject", "HeadObject": "s3:GetObject", "PutObject": "s3:PutObject",
    "DeleteObject": "s3:DeleteObject", "DeleteObjects": "s3:DeleteObject", "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket", "HeadBucket": "s3:ListBucket", "CopyObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject", "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
}


def s3_request(operation: str, params: dict, *, partition: str = "aws") -> S3Request:
    """The IAM action, resource ARN and condition context of one S3 call (boto3 parameter names)."""
    if operation not in S3_ACTIONS:
        raise ValueError(f"S3 operation {operation} is not modelled by the rules layer; add it to S3_ACTIONS")
    bucket = params["Bucket"]
    action = S3_ACTIONS[operation]
    base = {"aws:SecureTransport": "true"}  # the SDK speaks TLS to AWS (moto's loopback endpoint is plain HTTP)
    if action == "s3:ListBucket":
        ctx = dict(base)
        for param, key in (("Prefix", "s3:prefix"), ("Delimiter", "s3:delimiter"), ("MaxKeys", "s3:max-keys")):
            if params.get(param) is not None:
                ctx[key] = str(params[param])
        return S3Request(action, f"arn:{partition}:s3:::{bucket}", ctx)
    if operation == "DeleteObjects":
        return S3Request(action, f"arn:{partition}:s3:::{bucket}/*", base)
    return S3Request(action, f"arn:{partition}:s3:::{bucket}/{params['Key']}", base,
                     reads_key=operation in ("GetObject", "HeadObject"))


def may_learn_absence(statements: list[dict], bucket: str, *, partition: str = "aws") -> bool:
    """S3 answers 404 for a missing key only to callers with s3:ListBucket on the bucket (no s3:prefix in context)."""
    return allowed(statements, "s3:ListBucket", f"arn:{partition}:s3:::{bucket}", {"aws:SecureTransport": "true"})


# ------------------------------------------------------------------ Glue requests as IAM sees them

# Which resources a Glue Data Catalog call is authorized on: every one of them must be allowed
# (https://docs.aws.amazon.com/glue/latest/dg/glue-specifying-resource-arns.html: a partition call needs the
# catalog, the database and the table; a database call the catalog and the database).
GLUE_RESOURCES = {
    "GetDatabase": "database", "GetTable": "table", "GetTables": "database", "CreateTable": "table",
    "CreatePartition": "table", "GetPartition": "table", "GetPartitions": "table", "UpdatePartition": "table",
    "DeletePartition": "table", "BatchCreatePartition": "table", "BatchGetPartition": "table",
    "BatchUpdatePartition": "table", "BatchDeletePartition": "table",
}


@dataclass
class GlueRequest:
    action: str
    resources: list[str]


def glue_request(operation: str, params: dict, *, region: str, account: str, partition: str = "aws") -> GlueRequest:
    """The IAM action and the resource ARNs (all of which must be allowed) of one Glue call."""
    if operation not in GLUE_RESOURCES:
        raise ValueError(f"Glue operation {operation} is not modelled by the rules layer; add it to GLUE_RESOURCES")
    catalog = params.get("CatalogId") or account
    base = f"arn:{partition}:glue:{region}:{catalog}"
    db = params["Name"] if operation == "GetDatabase" else params["DatabaseName"]
    out = [f"{base}:catalog", f"{base}:database/{db}"]
    if GLUE_RESOURCES[operation] == "table":
        table = {"GetTable": lambda: params["Name"], "CreateTable": lambda: params["TableInput"]["Name"]}.get(
            operation, lambda: params["TableName"])()
        out.append(f"{base}:table/{db}/{table}")
    return GlueRequest(f"glue:{operation}", out)


def decide_all(statements: list[dict], action: str, resources: list[str]) -> Decision:
    """Allowed only if every resource is: the first refusal decides."""
    d = Decision(False, "no resource")
    for r in resources:
        d = decide(statements, action, r)
        if not d.allowed:
            return d
    return d


__all__ = ["Decision", "GlueRequest", "S3Request", "allowed", "condition_holds", "decide", "decide_all",
           "glue_request", "may_learn_absence", "s3_request"]
