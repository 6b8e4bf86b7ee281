"""The damaged/ record of a raw object goes when the object is dealt with, as the README promises: "It stays
untransformed until it is restored from a copy or deleted; then the record goes." (local folder and S3)

An operator reads damaged/ to see what still needs a hand; a record left for an object that was deleted, or
restored and transformed, points them at a problem that is gone. The expected state is known by hand: which
objects were damaged, which one was deleted, which one was restored.
"""

from __future__ import annotations

from schemahub.layout import damaged_key, marker_key, raw_key
from schemahub.pipeline import transform_key
from schemahub.transform import Transformer
from tests.damaged.test_damaged_transform import _object


def test_deleting_a_damaged_object_removes_its_record_on_the_next_transform(store):
    gone, kept = raw_key("coinbase", "BTC-USD", 0), raw_key("coinbase", "BTC-USD", 10)
    store.put(gone, _object(0, 10)[:20])
    store.put(kept, b"garbage")
    assert sorted(Transformer(store).run().damaged) == [gone, kept]
    store.delete(gone)  # the operator chose to delete it (its trades become a hole the audit shows)

    res = Transformer(store).run()
    assert list(res.damaged) == [kept]
    assert not store.exists(damaged_key(gone))  # dealt with: no record pointing at an object that is not there
    assert store.exists(damaged_key(kept))      # still damaged: still recorded


def test_an_object_restored_and_transformed_one_key_at_a_time_loses_its_record(store):
    """The transform Lambda's path (pipeline.transform_key, one S3 notification per key)."""
    key = raw_key("coinbase", "BTC-USD", 0)
    whole = _object(0, 10)
    store.put(key, whole[:20])
    t = Transformer(store)
    try:
        transform_key(t, key)
    except Exception as e:
        assert type(e).__name__ == "DamagedObject"
    assert store.exists(damaged_key(key))
    store.put(key, whole)  # restored from a copy: S3 notifies the queue again
    assert transform_key(t, key).rows == 10 and store.exists(marker_key(key))
    assert not store.exists(damaged_key(key))
