"""A curated part whose Parquet footer is whole but whose pages inside are damaged (local folder and S3).

The footer check (schemahub.tablefiles) cannot see this damage: a flipped run of bytes in the middle of a
file, as a bad disk sector or an overwrite in place leaves. Reading such a part fails inside pyarrow's page
decoder. What an operator must still get, known by hand from the objects written: `compact` compacts every
other day, skips the damaged day naming the file and the command that rebuilds it, and the rows of no day
are lost (the damaged day keeps its parts; after the rebuild it compacts like the others).
"""

from __future__ import annotations

import io
import logging
from datetime import date

import pyarrow.parquet as pq

from schemahub import cli
from schemahub.compact import compact, read_layout
from tests.damaged.test_damaged_table import DAY_A, DAY_B, HINT, PRODUCT, _ids, _logging_back, _table  # noqa: F401


def _damage_pages(data: bytes) -> bytes:
    """Every byte of the first row group's column chunks inverted; the footer (and its magic) left as it was."""
    meta = pq.read_metadata(io.BytesIO(data))
    out = bytearray(data)
    rg = meta.row_group(0)
    for c in range(rg.num_columns):
        col = rg.column(c)
        start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
        for i in range(start, start + col.total_compressed_size):
            out[i] ^= 0xFF
    assert out[-4:] == b"PAR1" and out[-8:] == data[-8:]  # the footer holds: only the pages are damaged
    return bytes(out)


def test_a_part_damaged_in_its_pages_is_skipped_by_compact_by_name_and_every_other_day_compacts(store, store_uri,
                                                                                                   caplog, capsys):
    keys = _table(store)  # day A: objects 0 and 10 (two parts); day B: object 20
    bad = keys[f"{DAY_A}/10"]
    store.put(bad, _damage_pages(store.get(bad).data))
    caplog.set_level(logging.WARNING)

    res = compact(store, before=date(2026, 12, 1), min_parts=1)
    partition_a = f"exchange=coinbase/product_id={PRODUCT}/date={DAY_A}"
    partition_b = f"exchange=coinbase/product_id={PRODUCT}/date={DAY_B}"
    assert res.partitions == 1 and res.skipped_damaged == [partition_a]
    assert set(read_layout(store).compacted) == {partition_b}  # day B compacted; day A still read as its parts
    line = next(r.getMessage() for r in caplog.records if r.name.startswith("schemahub") and bad in r.getMessage())
    assert "\n" not in line and HINT in line and partition_a in line

    # The CLI says it in one line too, and still compacts the rest (nothing left to compact but day A).
    capsys.readouterr()
    assert cli.main(["compact", "--storage", store_uri]) == 0
    assert "internal error" not in capsys.readouterr().err

    # What the warning says to do brings day A back whole, and it compacts.
    assert cli.main(["transform", "--storage", store_uri, "--all", "--exchange", "coinbase", "--product", PRODUCT]) == 0
    assert compact(store, before=date(2026, 12, 1), min_parts=1).partitions == 1
    assert set(read_layout(store).compacted) == {partition_a, partition_b}
    assert _ids(store) == list(range(1, 31))
