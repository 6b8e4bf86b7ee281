"""A trade id printed in another spelling of its integer (`2000150.0`, `"02000160"`), every time it is served.

The exchange's history is what it is: a trade printed that way is printed that way on every request, so a
retry never sees another answer. One such line must not stop the product forever (issue #9: "one bad input
never blocks the rest"): raw keeps the line exactly as served (it is the tape), the transform quarantines it
with field, value and reason, and every other trade lands, in this run. Ground truth: the simulator's book
(which ids exist, how each line is served) and the two lines misprinted by hand.
"""

from __future__ import annotations

import json

from schemahub.landing import Checkpoints
from schemahub.layout import quarantine_key
from schemahub.query import connect
from schemahub.sim import FaultPlan
from schemahub.transform import Transformer
from tests.contract.harness import assert_exactly_once, book
from tests.hostile.test_paging import _run


def test_coinbase_ids_misprinted_as_other_spellings_of_their_integer_land_and_are_quarantined_not_blocking(tmp_path):
    b = book("coinbase", initial=300)
    served = b.trade_bytes
    as_float, as_padded = b.first_id + 150, b.first_id + 160
    spelled = {as_float: f"{as_float}.0", as_padded: f'"0{as_padded}"'}

    def misprinted(i):
        line = served(i)
        return line.replace(f'"trade_id":{i},'.encode(), f'"trade_id":{spelled[i]},'.encode()) if i in spelled else line

    b.trade_bytes = misprinted
    assert all(spelled[i].encode() in misprinted(i) for i in spelled)

    res, store, s, b, lo = _run(tmp_path, "coinbase", FaultPlan(), b=b)
    assert res.status == "ok" and not res.more_to_do, res
    cp = Checkpoints(store).load("coinbase", b.product_id)
    assert cp.hi == s.cursor_of(b, b.head())
    got = assert_exactly_once(store, s, b, cp.lo, cp.hi)  # every trade once, byte for byte as served
    assert len(got) == 300 and all(spelled[i].encode() in got[i] for i in spelled)

    t = Transformer(store).run()
    assert (t.rows, t.quarantined, t.damaged, t.failed) == (298, 2, {}, {})
    ids = {int(r[0]) for r in connect(store).execute("SELECT trade_id FROM trades").fetchall()}
    assert ids == set(range(b.first_id, b.first_id + 300)) - set(spelled)
    q = [json.loads(x) for o in store.list("quarantine/") for x in store.get(o.key).data.splitlines()]
    assert sorted((r["field"], r["value"]) for r in q) == sorted(("trade_id", v.strip('"')) for v in spelled.values())
    assert {quarantine_key(r["raw_key"]) for r in q} <= {o.key for o in store.list("quarantine/")}
