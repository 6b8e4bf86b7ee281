"""The rules layer's IAM evaluator on known allow and deny cases (AWS's documented evaluation logic)."""

from __future__ import annotations

import pytest

from tests.aws.iam import allowed, condition_holds, decide, may_learn_absence, s3_request

B = "arn:aws:s3:::data"
GET_RAW = {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": f"{B}/schemahub/raw/*"}
LIST_RAW = {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": B,
            "Condition": {"StringLike": {"s3:prefix": ["schemahub/raw/*"]}}}


def test_default_deny_and_allow_by_action_and_resource_wildcards():
    assert allowed([GET_RAW], "s3:GetObject", f"{B}/schemahub/raw/coinbase/BTC-USD/1.jsonl.gz")
    assert allowed([GET_RAW], "S3:getobject", f"{B}/schemahub/raw/x")  # actions are case-insensitive
    assert not allowed([GET_RAW], "s3:GetObject", f"{B}/schemahub/bans/binance.json")
    assert not allowed([GET_RAW], "s3:GetObject", f"{B}/Schemahub/raw/x")  # resources are not
    assert not allowed([GET_RAW], "s3:DeleteObject", f"{B}/schemahub/raw/x")
    assert not allowed([], "s3:GetObject", f"{B}/schemahub/raw/x")
    assert allowed([{"Effect": "Allow", "Action": "s3:Get?bject", "Resource": "*"}], "s3:GetObject", f"{B}/k")
    assert not allowed([{"Effect": "Allow", "Action": "s3:[G]etObject", "Resource": "*"}], "s3:GetObject", f"{B}/k")


def test_explicit_deny_wins_over_any_allow():
    deny = {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "s3:*", "Resource": [B, f"{B}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    d = decide([GET_RAW, deny], "s3:GetObject", f"{B}/schemahub/raw/x", {"aws:SecureTransport": "false"},
               principal={"AWS": "arn:aws:iam::1:role/r"})
    assert not d.allowed and "explicitly denied" in d.reason
    assert allowed([GET_RAW, deny], "s3:GetObject", f"{B}/schemahub/raw/x", {"aws:SecureTransport": "true"},
                   principal={"AWS": "arn:aws:iam::1:role/r"})


def test_string_like_prefix_condition_on_list_bucket():
    assert allowed([LIST_RAW], "s3:ListBucket", B, {"s3:prefix": "schemahub/raw/coinbase/BTC-USD/"})
    assert not allowed([LIST_RAW], "s3:ListBucket", B, {"s3:prefix": "schemahub/checkpoints/"})
    assert not allowed([LIST_RAW], "s3:ListBucket", B, {})  # no Prefix parameter: the key is missing -> false


@pytest.mark.parametrize("op, key, want, ctx, expected", [
    ("StringEquals", "aws:SourceAccount", "123", {"aws:SourceAccount": "123"}, True),
    ("StringEquals", "aws:SourceAccount", "123", {"aws:SourceAccount": "999"}, False),
    ("StringEquals", "aws:SourceAccount", "123", {}, False),
    ("StringNotEquals", "aws:SourceAccount", "123", {}, True),  # negated operators hold for a missing key
    ("StringEqualsIfExists", "aws:SourceAccount", "123", {}, True),
    ("ArnLike", "aws:SourceArn", "arn:aws:s3:::data*", {"aws:SourceArn": "arn:aws:s3:::data"}, True),
    ("ArnLike", "aws:SourceArn", "arn:aws:s3:::data", {"aws:SourceArn": "arn:aws:s3:::other"}, False),
    ("ArnNotLike", "aws:SourceArn", "arn:aws:s3:::data", {"aws:SourceArn": "arn:aws:s3:::other"}, True),
    ("Bool", "aws:SecureTransport", "false", {"aws:SecureTransport": "true"}, False),
    ("NumericLessThanEquals", "s3:max-keys", "10", {"s3:max-keys": "5"}, True),
    ("Null", "s3:prefix", "true", {}, True),
    ("Null", "s3:prefix", "true", {"s3:prefix": "x"}, False),
    ("ForAnyValue:StringLike", "s3:prefix", ["a*", "b*"], {"s3:prefix": ["c", "bx"]}, True),
    ("ForAllValues:StringLike", "s3:prefix", ["a*"], {"s3:prefix": ["ax", "bx"]}, False),
    ("ForAllValues:StringLike", "s3:prefix", ["a*"], {}, True),
])
def test_condition_operators(op, key, want, ctx, expected):
    assert condition_holds(op, key, want, ctx) is expected


def test_condition_values_are_ored_and_keys_anded():
    stmt = {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*", "Principal": {"Service": "s3.amazonaws.com"},
            "Condition": {"ArnLike": {"aws:SourceArn": "arn:aws:s3:::data"},
                          "StringEquals": {"aws:SourceAccount": ["111", "123"]}}}
    s3 = {"Service": "s3.amazonaws.com"}
    assert allowed([stmt], "sqs:SendMessage", "q", {"aws:SourceArn": "arn:aws:s3:::data", "aws:SourceAccount": "123"}, s3)
    assert not allowed([stmt], "sqs:SendMessage", "q", {"aws:SourceArn": "arn:aws:s3:::data", "aws:SourceAccount": "9"}, s3)
    assert not allowed([stmt], "sqs:SendMessage", "q", {"aws:SourceArn": "arn:aws:s3:::data", "aws:SourceAccount": "123"},
                       {"Service": "sns.amazonaws.com"})


def test_s3_requests_map_to_iam_actions_resources_and_context():
    r = s3_request("ListObjectsV2", {"Bucket": "data", "Prefix": "schemahub/raw/"})
    assert (r.action, r.resource, r.context["s3:prefix"]) == ("s3:ListBucket", B, "schemahub/raw/")
    r = s3_request("HeadObject", {"Bucket": "data", "Key": "schemahub/bans/x.json"})
    assert (r.action, r.resource, r.reads_key) == ("s3:GetObject", f"{B}/schemahub/bans/x.json", True)
    assert s3_request("PutObject", {"Bucket": "data", "Key": "k", "IfNoneMatch": "*"}).action == "s3:PutObject"
    with pytest.raises(ValueError, match="not modelled"):
        s3_request("PutBucketPolicy", {"Bucket": "data"})


def test_absence_is_disclosed_only_with_an_unconditioned_list_bucket():
    assert not may_learn_absence([GET_RAW], "data")
    assert not may_learn_absence([GET_RAW, LIST_RAW], "data")  # a prefix-scoped ListBucket does not disclose
    assert may_learn_absence([GET_RAW, {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": B}], "data")
    assert not may_learn_absence([{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::other"}], "data")


def test_glue_partition_calls_need_the_catalog_the_database_and_the_table():
    from tests.aws.iam import decide_all, glue_request

    base = "arn:aws:glue:eu-west-1:123456789012"
    r = glue_request("BatchUpdatePartition", {"DatabaseName": "schemahub", "TableName": "trades", "Entries": []},
                     region="eu-west-1", account="123456789012")
    assert r.action == "glue:BatchUpdatePartition"
    assert r.resources == [f"{base}:catalog", f"{base}:database/schemahub", f"{base}:table/schemahub/trades"]
    assert glue_request("GetTable", {"DatabaseName": "schemahub", "Name": "trades"}, region="eu-west-1",
                        account="123456789012").resources[2] == f"{base}:table/schemahub/trades"
    grant = {"Effect": "Allow", "Action": ["glue:BatchUpdatePartition"], "Resource": r.resources}
    assert decide_all([grant], r.action, r.resources).allowed
    # The table alone is not enough: Glue also authorizes the call on its database and catalog.
    only_table = {**grant, "Resource": [f"{base}:table/schemahub/trades"]}
    d = decide_all([only_table], r.action, r.resources)
    assert not d.allowed and f"{base}:catalog" in d.reason
    # Another table of the same database is refused.
    other = glue_request("UpdatePartition", {"DatabaseName": "schemahub", "TableName": "other"},
                         region="eu-west-1", account="123456789012")
    assert not decide_all([{**grant, "Action": "glue:UpdatePartition"}], other.action, other.resources).allowed
    with pytest.raises(ValueError, match="not modelled"):
        glue_request("DeleteTable", {"DatabaseName": "schemahub", "Name": "trades"}, region="eu-west-1",
                     account="123456789012")
