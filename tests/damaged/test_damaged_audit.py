"""`schemahub audit` over a table with a damaged curated part (local folder and S3).

The audit is the tool that proves nothing is missing; a damaged table file (truncated by a full disk, or
damaged in its pages behind a whole footer) is exactly what it must find. Expected by hand: the day's other
part and the other day are read, the damaged file is named with the command that rebuilds it, the ids it held
(11..20) are reported missing from the table, and there is no internal error. After the rebuild it names
nothing and passes.
"""

from __future__ import annotations

import json

import pytest

from schemahub import cli
from tests.damaged.test_damaged_pages import _damage_pages
from tests.damaged.test_damaged_table import DAY_A, HINT, PRODUCT, _damage, _logging_back, _table  # noqa: F401


@pytest.mark.parametrize("how", ["truncated", "pages"])
def test_audit_names_a_damaged_table_file_and_reports_its_ids_missing_from_the_table(store, store_uri, capsys, how):
    keys = _table(store)  # raw objects (0, 10], (10, 20], (20, 30]: one chain; its checkpoint from the chain
    assert cli.main(["repair-checkpoint", "--storage", store_uri, "--exchange", "coinbase", "--product", PRODUCT]) == 0
    bad = keys[f"{DAY_A}/10"]
    data = store.get(bad).data
    store.put(bad, _damage_pages(data) if how == "pages" else _damage(data, how))
    args = ["audit", "--storage", store_uri, "--exchange", "coinbase", "--product", PRODUCT]
    capsys.readouterr()

    code = cli.main(args)
    out, err = capsys.readouterr()
    assert "internal error" not in err, err
    assert code != 0
    line = next(x for x in (out + err).splitlines() if bad in x)
    assert HINT in line

    assert cli.main([*args, "--format", "json"]) != 0
    (product,) = json.loads(capsys.readouterr().out)["products"]
    assert sum(h["ids"] for h in product["holes"]) == 10  # ids 11..20, the damaged part's rows
    assert any(bad in d for d in product["damaged"])

    assert cli.main(["transform", "--storage", store_uri, "--all", "--exchange", "coinbase", "--product", PRODUCT]) == 0
    capsys.readouterr()
    assert cli.main(args) == 0
