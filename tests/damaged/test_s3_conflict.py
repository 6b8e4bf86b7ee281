"""S3's 409 ConditionalRequestConflict on a conditional PUT, through moto's server.

AWS documents (PutObject, If-None-Match / If-Match): a failed condition is 412 PreconditionFailed; "if a
conflicting operation occurs during the upload S3 returns a 409 ConditionalRequestConflict response. On a 409
failure you should retry the upload." So a 409 says nothing about who won: it must be retried (bounded), and
only S3's answer to the retry (200, or 412) decides. botocore does not retry 409 for S3 itself.

The 409 is injected with a botocore `before-send` hook, which answers in place of the wire for the first
requests; every later request goes to moto's real server.
"""

from __future__ import annotations

import uuid

import pytest
from botocore.awsrequest import AWSResponse

from schemahub.clock import FakeClock
from schemahub.errors import PreconditionFailed, StoreUnavailable
from schemahub.store.s3 import S3Store

CONFLICT = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ConditionalRequestConflict</Code>'
            b"<Message>A conflicting operation occurred. If using PutObject you can retry the request.</Message>"
            b"<RequestId>1</RequestId></Error>")


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_kw):
        yield self.body


def _inject_409(store: S3Store, times: int) -> list[str]:
    """The next `times` conditional PUTs answer 409; returns the log of every conditional PUT sent."""
    sent: list[str] = []

    def before_send(request, **_kw):
        if request.method != "PUT" or not ({"If-None-Match", "If-Match"} & set(request.headers.keys())):
            return None
        sent.append("409" if len(sent) < times else "sent")
        if sent[-1] == "sent":
            return None
        return AWSResponse(request.url, 409, {"Content-Type": "application/xml"}, _Raw(CONFLICT))

    store.client.meta.events.register("before-send.s3.PutObject", before_send)
    return sent


@pytest.fixture
def s3(s3_bucket):
    store = S3Store(s3_bucket, f"root-{uuid.uuid4().hex[:6]}")
    store.clock = FakeClock()
    return store


def test_a_409_on_a_create_only_put_is_retried_and_the_write_lands(s3):
    sent = _inject_409(s3, 2)
    etag = s3.put("leases/a.json", b"mine", if_none_match=True)
    assert sent == ["409", "409", "sent"]
    got = s3.get("leases/a.json")
    assert (got.data, got.etag) == (b"mine", etag)
    assert len(s3.clock.slept) == 2 and all(0 < s <= 1.0 for s in s3.clock.slept)  # bounded backoff


def test_a_409_then_another_writer_won_is_a_lost_race_412_not_an_overwrite(s3):
    s3.put("leases/b.json", b"theirs", if_none_match=True)  # the conflicting operation, finished
    sent = _inject_409(s3, 1)
    with pytest.raises(PreconditionFailed):
        s3.put("leases/b.json", b"mine", if_none_match=True)
    assert sent == ["409", "sent"] and s3.get("leases/b.json").data == b"theirs"


def test_a_409_on_a_compare_and_swap_is_retried_with_the_same_etag(s3):
    old = s3.put("checkpoints/c.json", b"v1")
    sent = _inject_409(s3, 1)
    s3.put("checkpoints/c.json", b"v2", if_match=old)
    assert sent == ["409", "sent"] and s3.get("checkpoints/c.json").data == b"v2"
    # The same etag again: S3 now says 412 (the object changed), never a blind overwrite.
    sent2 = _inject_409(s3, 1)
    with pytest.raises(PreconditionFailed):
        s3.put("checkpoints/c.json", b"v3", if_match=old)
    assert "sent" in sent2 and s3.get("checkpoints/c.json").data == b"v2"


def test_a_409_that_never_ends_is_unavailable_after_bounded_retries_naming_the_key(s3):
    sent = _inject_409(s3, 10_000)
    with pytest.raises(StoreUnavailable) as err:
        s3.put("leases/d.json", b"mine", if_none_match=True)
    msg = str(err.value)
    assert "leases/d.json" in msg and "409" in msg and "ConditionalRequestConflict" in msg and "again" in msg
    assert 2 <= len(sent) <= 10 and not s3.exists("leases/d.json")
