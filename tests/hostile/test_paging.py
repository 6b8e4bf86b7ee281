"""A hostile exchange, per paging kind: a page is checked against what its request promised.

Each case is a misbehaviour real exchanges show (page caps below the limit asked for, a glitchy empty answer,
holes, duplicates, a misprinted head or cursor, ids that were never printed). The simulator serves it in the
exchange's own shape, and the ground truth (which trades the store must hold, which ids are truly missing) comes
from the simulator's book, never from the code under test. The generic cases run against every exchange in
tests/contract/test_exchange_contract.py; these are the exact figures of the issue and each kind's own rules.
"""

from __future__ import annotations

import time
from collections import deque

import pytest
from pydantic import ValidationError

from schemahub.landing import Checkpoints, IngestOptions, Lander
from schemahub.sim import Book, FaultPlan
from schemahub.sources.spec import IdWindowPagination, load_exchange
from schemahub.store.local import LocalStore
from tests.contract.harness import (
    EXCHANGES,
    PRODUCT,
    assert_exactly_once,
    book,
    paging_requests,
    sim,
    since_of,
    source,
    steady_state,
)


def _product(src, exchange):
    return next(p for p in src.list_products() if p.product_id == PRODUCT[exchange])


def _run(tmp_path, exchange, faults, *, b=None, page_size=None, after=0, deadline_s=30.0, spec_update=None,
         first_run=False):
    b = b or book(exchange, initial=2_500)
    store = LocalStore(str(tmp_path))
    with sim(exchange, [b], faults=faults) as s:
        src = source(exchange, s.url, page_size=page_size)
        if spec_update:
            src.p = src.p.model_copy(update=spec_update)
        p = _product(src, exchange)
        if first_run:
            lo, opts = None, IngestOptions(since=since_of(b, b.first_id))
        else:
            lo, opts = steady_state(store, s, b, b.first_id - 1 + after), IngestOptions()
        res = Lander(store, src).run(p, opts, deadline=time.monotonic() + deadline_s)
    return res, store, s, b, lo


def _landed_to_head(store, s, b, lo, res):
    assert res.status == "ok" and not res.more_to_do, res
    cp = Checkpoints(store).load(s.exchange, b.product_id)
    assert cp.hi == s.cursor_of(b, b.head()) and (lo is None or cp.lo == lo), (cp, res)
    return assert_exactly_once(store, s, b, cp.lo, cp.hi)


# ------------------------------------------------------------------ id windows (Coinbase, OKX)

def test_coinbase_a_server_capping_pages_at_100_lands_all_2500_trades(tmp_path):
    """The issue's figure: 300 of 2,500 landed, because each short page was taken as the whole window."""
    res, store, s, b, lo = _run(tmp_path, "coinbase", FaultPlan(page_cap=100))  # page_size 1000 from the YAML
    got = _landed_to_head(store, s, b, lo, res)
    assert len(got) == 2_500 and res.missing_ids == 0
    # Each 1,000-id window took 10 capped pages, each asking only for what was still missing.
    assert len(paging_requests(s)) == 25, paging_requests(s)


def test_okx_a_server_capping_pages_below_its_unverified_limit_lands_everything(tmp_path):
    res, store, s, b, lo = _run(tmp_path, "okx", FaultPlan(page_cap=40))  # OKX asks for 100 (UNVERIFIED maximum)
    assert len(_landed_to_head(store, s, b, lo, res)) == 2_500


@pytest.mark.parametrize("exchange", ["coinbase", "okx"])
def test_one_transient_empty_window_loses_none_of_its_trades(tmp_path, exchange):
    """The issue's figure: one `[]` for one window lost 1,000 trades (Coinbase)."""
    res, store, s, b, lo = _run(tmp_path, exchange, FaultPlan(page_script=deque([None, "empty"])))
    assert len(_landed_to_head(store, s, b, lo, res)) == 2_500
    assert s.faults.served == {"empty": 1}


@pytest.mark.parametrize("exchange", ["coinbase", "okx"])
def test_empty_windows_forever_fail_the_product_and_the_watermark_stays(tmp_path, exchange):
    """The issue: `[]` forever landed 0 trades and moved the watermark to the head, exit 0."""
    res, store, s, b, lo = _run(tmp_path, exchange, FaultPlan(page_rates={"empty": 1.0}))
    assert res.status == "failed" and "came back empty 4 times" in res.message and "not moving past" in res.message
    cp = Checkpoints(store).load(exchange, b.product_id)
    assert (cp.lo, cp.hi) == (lo, lo) and res.trades == 0


@pytest.mark.parametrize("exchange", ["coinbase", "okx"])
def test_empty_answers_forever_on_a_first_run_leave_no_checkpoint_at_the_head(tmp_path, exchange):
    res, store, s, b, lo = _run(tmp_path, exchange, FaultPlan(page_rates={"empty": 1.0}), first_run=True)
    assert res.status == "failed" and "returns no trades" in res.message, res
    assert Checkpoints(store).load(exchange, b.product_id) is None  # nothing claims the history was walked


def test_coinbase_a_transient_empty_answer_in_the_first_run_search_does_not_skip_the_start(tmp_path):
    """The --since search: an empty answer there would move the start past trades at or after --since."""
    b = book("coinbase", initial=2_500)
    # The search halves (0, head]: find the first probe at or above the first trade, where an empty answer lies
    # (the truth there is a trade at or after --since). Request 0 asks for the newest trade.
    lo, hi, k = 0, b.head(), 0
    while True:
        k += 1
        mid = (lo + hi) // 2
        if mid >= b.first_id:
            break
        lo = mid
    faults = FaultPlan(page_script=deque([None] * k + ["empty"]))
    res, store, s, b, _ = _run(tmp_path, "coinbase", faults, b=b, first_run=True)
    got = _landed_to_head(store, s, b, None, res)
    assert min(got) == b.first_id and len(got) == 2_500 and s.faults.served == {"empty": 1}


@pytest.mark.parametrize("exchange", ["coinbase", "okx"])
def test_a_head_misprinted_once_is_confirmed_and_the_run_stops_at_the_real_head(tmp_path, exchange):
    """The issue: one head of 10^12 made the run walk empty windows into the void; later trades were skipped."""
    res, store, s, b, lo = _run(tmp_path, exchange, FaultPlan(head_script=deque(["misprint"])), deadline_s=20)
    assert len(_landed_to_head(store, s, b, lo, res)) == 2_500
    assert any("asked again it is" in w for w in res.warnings) and res.head == 10**12


@pytest.mark.parametrize("exchange", ["coinbase", "okx"])
def test_a_head_misprinted_every_time_stops_the_run_where_trades_end(tmp_path, exchange):
    """Asked again, the exchange repeats the wrong head: windows above the real head are shown to hold no trade
    and nothing above them exists, so the run stops there instead of moving the checkpoint to 10^12."""
    faults = FaultPlan(head_script=deque(["misprint"] * 20))
    res, store, s, b, lo = _run(tmp_path, exchange, faults, deadline_s=20)
    got = _landed_to_head(store, s, b, lo, res)
    assert len(got) == 2_500 and any("no trade exists after id" in w for w in res.warnings), res.warnings


def test_coinbase_ids_never_printed_at_the_bottom_of_a_window_are_confirmed_gaps(tmp_path):
    """Missing ids just above the cursor: no page ever shows trades below them inside the window, so the gap is
    confirmed by `after=` alone (a trade at or below the cursor is the next one down) with trades above it."""
    first = 2_000_000
    # Windows start at the cursor, first + 99: the first 5 ids of the first window are missing, and 10 ids
    # across the boundary of the first and second windows.
    missing = set(range(first + 100, first + 105)) | set(range(first + 1_095, first + 1_105))
    b = book("coinbase", initial=2_500, missing=missing)
    res, store, s, b, lo = _run(tmp_path, "coinbase", FaultPlan(), b=b, after=100)
    got = _landed_to_head(store, s, b, lo, res)
    assert len(got) == 2_385 and res.missing_ids == 15 and not set(got) & missing


def test_a_window_without_contiguous_ids_walks_below_the_lowest_id_received(tmp_path):
    """An exchange whose ids are not contiguous (contiguous_ids: false): only a confirmed empty answer ends a
    window, so a page cap still loses nothing, and the ids that do not exist are not reported as gaps."""
    first = 2_000_000
    b = book("coinbase", initial=3_000, missing={i for i in range(first, first + 3_000) if i % 3 == 0})
    res, store, s, b, lo = _run(tmp_path, "coinbase", FaultPlan(page_cap=70), b=b,
                                spec_update={"contiguous_ids": False})
    assert len(_landed_to_head(store, s, b, lo, res)) == 2_000
    assert res.missing_ids == 0


# ------------------------------------------------------------------ forward from an id (Binance)

def test_binance_ids_missing_from_the_middle_of_a_page_are_asked_for_again_from_the_hole(tmp_path):
    """The issue: ids missing from the middle of a page were never asked for again (Binance ids are contiguous)."""
    res, store, s, b, lo = _run(tmp_path, "binance", FaultPlan(page_script=deque([None, "hole"])))
    assert len(_landed_to_head(store, s, b, lo, res)) == 2_500 and res.missing_ids == 0
    # The second page (ids 2001000..2001999) lost ids 2001333..2001432; the next request starts at the hole.
    asked = paging_requests(s)
    assert "fromId=2001333&" in asked[2], asked


def test_binance_a_hole_is_a_gap_only_when_a_request_from_it_still_leaves_it_out(tmp_path):
    first = 2_000_000
    missing = {first + 10, first + 11, first + 1_500}
    b = book("binance", initial=2_500, missing=missing)
    res, store, s, b, lo = _run(tmp_path, "binance", FaultPlan(), b=b)
    got = _landed_to_head(store, s, b, lo, res)
    assert len(got) == 2_497 and res.missing_ids == 3
    asked = paging_requests(s)
    assert sum(f"fromId={first + 10}&" in r for r in asked) == 1, asked  # seen in a page, then asked from it
    assert sum(f"fromId={first + 1_500}&" in r for r in asked) == 1, asked


@pytest.mark.parametrize("retries,status", [(0, "failed"), (2, "ok")])
def test_binance_empty_retries_is_the_number_of_times_an_empty_answer_is_asked_again(tmp_path, retries, status):
    faults = FaultPlan(page_script=deque([None, "empty", "empty"]))
    res, store, s, b, lo = _run(tmp_path, "binance", faults, spec_update={"empty_retries": retries})
    assert res.status == status, res
    if status == "failed":
        assert "returned no trades 1 times" in res.message
        cp = Checkpoints(store).load("binance", b.product_id)
        assert cp.hi == lo  # that object's pages are dropped with it; nothing past the empty answer moves
    else:
        assert len(_landed_to_head(store, s, b, lo, res)) == 2_500


def test_binance_a_misprinted_head_does_not_fail_the_run(tmp_path):
    res, store, s, b, lo = _run(tmp_path, "binance", FaultPlan(head_script=deque(["misprint"])))
    assert len(_landed_to_head(store, s, b, lo, res)) == 2_500


# ------------------------------------------------------------------ forward from an opaque cursor (Kraken)

def test_kraken_a_short_page_is_not_the_end_of_the_trades(tmp_path):
    res, store, s, b, lo = _run(tmp_path, "kraken", FaultPlan(page_cap=300))
    assert len(_landed_to_head(store, s, b, lo, res)) == 2_500


def test_kraken_a_hole_is_asked_again_from_the_same_cursor_and_only_a_repeated_hole_is_a_gap(tmp_path):
    first = 2_000_000
    b = book("kraken", initial=2_500, missing={first + 1_200})
    res, store, s, b, lo = _run(tmp_path, "kraken", FaultPlan(page_script=deque([None, "hole"])), b=b)
    got = _landed_to_head(store, s, b, lo, res)
    assert len(got) == 2_499 and res.missing_ids == 1 and s.faults.served == {"hole": 1}
    asked = paging_requests(s)
    # Asked twice from the same cursor: the transient hole, the real one, and the empty answer that ends the walk.
    assert len(asked) == len(set(asked)) + 3, asked


def test_kraken_the_first_page_of_a_run_drops_trades_dated_before_its_cursor(tmp_path):
    """No trade id is known before the first page of a run, so the page's times tell: the trades clearly before
    the cursor are reported and not landed again. The one printed at the cursor's own time cannot be told from a
    new trade at that time (times are floats; Kraken prints several trades at one time) and is kept: the table
    holds each trade once (the transform dedupes by trade id)."""
    res, store, s, b, lo = _run(tmp_path, "kraken", FaultPlan(page_script=deque(["below"])), after=100)
    assert res.status == "ok" and res.ids_backwards == 2, res
    cp = Checkpoints(store).load("kraken", b.product_id)
    assert cp.hi == s.cursor_of(b, b.head())
    from tests.contract.harness import raw_lines

    ids = [i for _, _, xs in raw_lines(store, s, b.product_id) for i in xs]
    assert sorted(ids) == [b.first_id + 99] + list(range(b.first_id + 100, b.head() + 1))


def test_kraken_a_cursor_far_past_its_page_is_asked_again_and_refused_if_it_stays(tmp_path):
    res, store, s, b, lo = _run(tmp_path, "kraken", FaultPlan(page_rates={"misprint_cursor": 1.0}))
    assert res.status == "failed" and "past the newest trade of its page" in res.message, res
    cp = Checkpoints(store).load("kraken", b.product_id)
    assert cp.hi == lo and res.trades == 0


# ------------------------------------------------------------------ the YAML options

def test_page_checks_are_options_of_every_paging_kind_with_documented_defaults():
    p = IdWindowPagination(kind="id_window_desc")
    assert (p.contiguous_ids, p.empty_retries, p.max_head_jump) == (False, 3, 1_000_000)
    with pytest.raises(ValidationError):
        IdWindowPagination(kind="id_window_desc", empty_retries=-1)
    with pytest.raises(ValidationError):
        IdWindowPagination(kind="id_window_desc", max_head_jump=0)
    with pytest.raises(ValidationError):
        IdWindowPagination(kind="id_window_desc", contiguous_ids="sometimes")
    for exchange in EXCHANGES:  # every exchange says what it knows about its ids
        assert load_exchange(exchange).source.trades.pagination.contiguous_ids is True, exchange


def test_a_book_that_misses_ids_is_the_ground_truth_for_every_simulator():
    """The simulators' own truth: ids never printed are never served and never expected."""
    for exchange in EXCHANGES:
        b = Book(PRODUCT[exchange], first_id=100, initial=50, missing={110, 111})
        s = sim(exchange, [b])
        assert 110 not in s.expected_ids(b, 0, s.cursor_of(b, b.head())) and len(s.expected_ids(b, 0, s.cursor_of(b, 149))) == 48
