"""The review queue: one person labels the top-k pairs of the worst queries, one pair at a time, by keyboard.

The dashboard's review page draws; this module decides. It is kept apart from Streamlit so that the rules that
protect verdicts can be tested on their own:

* every key press names the pair it was given for (the pair that was on screen when the press was sent), and the
  verdict is stored against *that* pair, never against "whatever pair is current" when the server gets to it. The
  browser sends one press at a time and holds later presses until the page shows the next pair, so a G then a B
  80 ms apart label the first pair good and the second bad;
* presses are numbered; a number at or below the last one applied is a repeat (a resend, a rerun of the page)
  and changes nothing;
* a pair that is not in the queue is refused with a message instead of being labelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .errors import SimxError

#: Keys of the queue and what they do (digits 1-9 are added per reason: bad, with the n-th reason).
ACTION_KEYS: dict[str, str] = {"g": "good", "b": "bad", "s": "skip", "ArrowLeft": "back"}


class ReviewError(SimxError):
    """A key press cannot be applied (malformed, or for a pair that is not in the queue)."""


@dataclass(frozen=True)
class Pair:
    """One (query, neighbour) pair of the queue with the neighbour's 1-based rank among the query's results."""

    query: str
    neighbour: str
    rank: int

    def token(self) -> list:
        """What the page hands to the browser, and the browser sends back with each press."""
        return [self.query, self.neighbour, self.rank]


@dataclass(frozen=True)
class Press:
    """One key press: its number in the session, the key, and the pair that was on screen for it."""

    seq: int
    key: str
    pair: Pair


@dataclass
class ReviewState:
    """What one person's review session remembers between presses (kept in the dashboard session)."""

    history: list[Pair] = field(default_factory=list)
    skipped: set[tuple[str, str]] = field(default_factory=set)
    #: A pair brought back with Back (shown instead of the first remaining one).
    override: Pair | None = None
    #: Number of the last press applied (the browser numbers its presses 1, 2, ...).
    ack: int = 0


def queue_pairs(per_query, k: int) -> list[Pair]:
    """The queue of an evaluation table: :func:`simx.index.evaluation.review_pairs`' order (worst queries first,
    then by rank) as :class:`Pair` values."""
    from .index.evaluation import review_pairs

    return [Pair(q, n, r) for q, n, r in review_pairs(per_query, k)]


def key_map(reasons: Sequence[str]) -> dict[str, tuple[str, str | None]]:
    """key -> (action, reason): G good, B bad (reason chosen on the page), S skip, Left back, 1-9 bad with the
    n-th reason."""
    keys: dict[str, tuple[str, str | None]] = {k: (a, None) for k, a in ACTION_KEYS.items()}
    for i, reason in enumerate(list(reasons)[:9]):
        keys[str(i + 1)] = ("bad", reason)
    return keys


def parse_press(value: Any) -> Press:
    """A press as the browser sends it, ``{"seq": 3, "key": "g", "pair": [query, neighbour, rank]}``."""
    if not isinstance(value, Mapping):
        raise ReviewError("malformed key press")
    try:
        seq, key, pair = int(value["seq"]), str(value["key"]), value["pair"]
        query, neighbour, rank = str(pair[0]), str(pair[1]), int(pair[2])
    except (KeyError, TypeError, ValueError, IndexError):
        raise ReviewError("malformed key press") from None
    return Press(seq, key, Pair(query, neighbour, rank))


def current_pair(state: ReviewState, pairs: Sequence[Pair], done: set[tuple[str, str]]) -> tuple[Pair | None, int]:
    """(the pair to show, how many pairs remain): a pair brought back with Back, else the first pair neither
    labelled by this person (``done``) nor skipped in this session."""
    remaining = [p for p in pairs if (p.query, p.neighbour) not in done and (p.query, p.neighbour) not in state.skipped]
    return (state.override or (remaining[0] if remaining else None)), len(remaining)


def apply_action(state: ReviewState, action: str, pair: Pair, reason: str | None,
                 save: Callable[[Pair, str, str | None], None]) -> str:
    """Apply one action to ``pair`` (``save(pair, verdict, reason)`` stores a verdict); returns what happened.

    A verdict or a skip moves on (the pair joins the history that Back walks); Back shows the previous pair again.
    ``save`` may raise :class:`SimxError`; then nothing else changes.
    """
    if action == "back":
        if not state.history:
            return "nothing to go back to"
        state.override = state.history.pop()
        return f"back to {pair_text(state.override)}"
    if action in ("good", "bad"):
        save(pair, action, reason if action == "bad" else None)
        done = f"{action}: {pair_text(pair)}"
    elif action == "skip":
        state.skipped.add((pair.query, pair.neighbour))
        done = f"skipped: {pair_text(pair)}"
    else:
        raise ReviewError(f"unknown action {action!r}")
    state.history.append(pair)
    state.override = None
    return done


def apply_press(state: ReviewState, press: Press, pairs: Sequence[Pair], keys: Mapping[str, tuple[str, str | None]],
                default_reason: str | None, save: Callable[[Pair, str, str | None], None]) -> str | None:
    """Apply a key press to the pair it names; None when it is a repeat of a press already applied.

    Raises :class:`ReviewError` for an unknown key or a pair that is not in the queue (the press still counts as
    seen, so a resend of it is not applied later)."""
    if press.seq <= state.ack:
        return None
    state.ack = press.seq
    if press.key not in keys:
        raise ReviewError(f"key {press.key!r} does nothing here")
    if press.pair not in set(pairs):
        raise ReviewError(f"{pair_text(press.pair)} is not in this queue (the queue changed); press again")
    action, reason = keys[press.key]
    return apply_action(state, action, press.pair, reason or default_reason, save)


def pair_text(pair: Pair) -> str:
    return f"{pair.query} / #{pair.rank} {pair.neighbour}"
