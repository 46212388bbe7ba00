"""The review queue's rules (simx.review): verdicts land on the pair each press names, repeats change nothing."""

from __future__ import annotations

import pandas as pd
import pytest

from simx import review as rv

PAIRS = rv.queue_pairs(pd.DataFrame({"id": ["q1", "q2"], "neighbours": [["a", "b", "c"], ["d", "e"]]}), k=2)
KEYS = rv.key_map(["background_shortcut", "wrong_category", "other"])


def recorder():
    saved: dict[tuple[str, str], tuple[str, str | None]] = {}

    def save(pair, verdict, reason):
        saved[(pair.query, pair.neighbour)] = (verdict, reason)

    return saved, save


def press(seq, key, pair):
    return rv.parse_press({"seq": seq, "key": key, "pair": pair.token()})


def test_queue_is_top_k_per_query_with_1_based_ranks():
    assert [(p.query, p.neighbour, p.rank) for p in PAIRS] == [("q1", "a", 1), ("q1", "b", 2), ("q2", "d", 1),
                                                                ("q2", "e", 2)]


def test_a_press_labels_the_pair_it_names_not_the_current_one():
    state, (saved, save) = rv.ReviewState(), recorder()
    # G was sent for pair 1; B was held by the browser and sent for pair 2 once pair 2 was shown
    rv.apply_press(state, press(1, "g", PAIRS[0]), PAIRS, KEYS, "other", save)
    rv.apply_press(state, press(2, "b", PAIRS[1]), PAIRS, KEYS, "other", save)
    assert saved == {("q1", "a"): ("good", None), ("q1", "b"): ("bad", "other")}
    # a stale press for pair 1 arriving now still names pair 1: it relabels pair 1, never the pair now current
    current, _ = rv.current_pair(state, PAIRS, set(saved))
    assert current == PAIRS[2]
    rv.apply_press(state, press(3, "b", PAIRS[0]), PAIRS, KEYS, "other", save)
    assert saved[("q1", "a")] == ("bad", "other") and ("q2", "d") not in saved


def test_repeated_press_numbers_are_ignored_and_digits_pick_the_reason():
    state, (saved, save) = rv.ReviewState(), recorder()
    assert rv.apply_press(state, press(1, "2", PAIRS[0]), PAIRS, KEYS, "other", save)
    assert saved == {("q1", "a"): ("bad", "wrong_category")}
    assert rv.apply_press(state, press(1, "g", PAIRS[0]), PAIRS, KEYS, "other", save) is None  # a resend
    assert saved == {("q1", "a"): ("bad", "wrong_category")} and state.ack == 1
    assert KEYS["3"] == ("bad", "other") and "4" not in KEYS


def test_skip_and_back_walk_the_queue():
    state, (saved, save) = rv.ReviewState(), recorder()
    rv.apply_press(state, press(1, "s", PAIRS[0]), PAIRS, KEYS, None, save)
    assert rv.current_pair(state, PAIRS, set(saved)) == (PAIRS[1], 3) and not saved
    rv.apply_press(state, press(2, "g", PAIRS[1]), PAIRS, KEYS, None, save)
    rv.apply_press(state, press(3, "ArrowLeft", PAIRS[2]), PAIRS, KEYS, None, save)
    assert rv.current_pair(state, PAIRS, set(saved))[0] == PAIRS[1]  # back to the pair just labelled
    rv.apply_press(state, press(4, "b", PAIRS[1]), PAIRS, KEYS, "other", save)
    assert saved == {("q1", "b"): ("bad", "other")}
    assert rv.current_pair(state, PAIRS, set(saved))[0] == PAIRS[2]


def test_unknown_pairs_keys_and_malformed_presses_are_refused():
    state, (saved, save) = rv.ReviewState(), recorder()
    with pytest.raises(rv.ReviewError, match="not in this queue"):
        rv.apply_press(state, press(1, "g", rv.Pair("q1", "zzz", 9)), PAIRS, KEYS, None, save)
    with pytest.raises(rv.ReviewError, match="does nothing"):
        rv.apply_press(state, press(2, "x", PAIRS[0]), PAIRS, KEYS, None, save)
    for bad in (None, "g", {"seq": 1, "key": "g"}, {"seq": "x", "key": "g", "pair": ["a", "b", 1]},
                {"seq": 1, "key": "g", "pair": ["a"]}):
        with pytest.raises(rv.ReviewError, match="malformed"):
            rv.parse_press(bad)
    assert not saved and state.ack == 2


def test_a_failed_save_moves_nothing():
    from simx.errors import SimxError

    state = rv.ReviewState()

    def broken(pair, verdict, reason):
        raise SimxError("database is locked")

    with pytest.raises(SimxError):
        rv.apply_press(state, press(1, "g", PAIRS[0]), PAIRS, KEYS, None, broken)
    assert rv.current_pair(state, PAIRS, set()) == (PAIRS[0], 4) and not state.history
