"""The label store: people's verdicts on (query, neighbour) pairs, kept in SQL through SQLAlchemy 2.

Where it lives
    By default a SQLite file beside the index, ``ROOT/NAME/labels.sqlite`` (:func:`default_url`), opened in WAL
    mode with a busy timeout so that readers never block the writer and concurrent writers wait instead of
    failing. Any SQLAlchemy URL can be used instead (``$SIMX_LABELS_URL`` or ``url=``), e.g. a shared PostgreSQL
    database for a team; the schema is created on first use.

Semantics: one current verdict per (index, query, neighbour, user), plus history
    :meth:`LabelStore.put` is an *upsert*: labelling a pair again replaces that user's verdict, reason and note
    (``created`` is kept, ``updated`` moves). Different users keep separate rows, so disagreements stay
    visible. Every write (create, update, delete) also appends an immutable row to ``label_events``, so nothing a
    person said is ever lost even though the ``labels`` table only holds the current state
    (:meth:`LabelStore.history`).

Concurrency
    Every write is one short transaction. On SQLite the transaction starts with ``BEGIN IMMEDIATE`` (it takes the
    write lock up front, so two writers can never deadlock on a lock upgrade, and the busy timeout makes the
    second one wait); the upsert itself is one ``INSERT ... ON CONFLICT DO UPDATE`` statement. Threads and
    processes can write at once and no label is lost.

Exports
    :meth:`LabelStore.export_csv`, :meth:`LabelStore.export_jsonl` and :meth:`LabelStore.export_triplets`, the
    last one a hard-negative file ``(query, positive, negative)`` for retraining: the negatives are the neighbours
    labelled *bad*, the positives the neighbours labelled *good* plus, when the caller passes the gallery's class
    labels, the retrieved neighbours that share the query's class label and nobody labelled bad.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import IO, Any, Iterable, Mapping, Sequence

from sqlalchemy import (
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .errors import SimxError
from .relevance import label_set

#: Environment variable holding a SQLAlchemy URL that overrides the per-index SQLite file.
URL_ENV = "SIMX_LABELS_URL"
#: File name of the default per-index SQLite database.
DB_FILE = "labels.sqlite"
VERDICTS = ("good", "bad")
#: reason key -> what the dashboard shows.
REASONS: dict[str, str] = {
    "background_shortcut": "background shortcut",
    "wrong_category": "wrong category",
    "near_duplicate": "near duplicate",
    "partial_match": "partial match",
    "colour_over_shape": "colour over shape",
    "other": "other",
}
#: Columns of every export, in order.
COLUMNS = ("id", "index", "model", "query_id", "neighbour_id", "rank", "score", "verdict", "reason", "note", "user",
           "created", "updated")


class LabelError(SimxError):
    """A label request is invalid (unknown verdict or reason, missing label id, unreachable database)."""


# --------------------------------------------------------------------------------------------- schema


class _Base(DeclarativeBase):
    pass


class _LabelRow(_Base):
    __tablename__ = "labels"
    __table_args__ = (
        UniqueConstraint("index_name", "query_id", "neighbour_id", "user", name="uq_label_pair_user"),
        Index("ix_labels_index_verdict", "index_name", "verdict"),
        Index("ix_labels_updated", "updated"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    index_name: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(512), default="")
    query_id: Mapped[str] = mapped_column(String(1024))
    neighbour_id: Mapped[str] = mapped_column(String(1024))
    rank: Mapped[int | None] = mapped_column(Integer, nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    verdict: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    user: Mapped[str] = mapped_column(String(128))
    created: Mapped[datetime] = mapped_column(DateTime)
    updated: Mapped[datetime] = mapped_column(DateTime)


class _EventRow(_Base):
    __tablename__ = "label_events"
    __table_args__ = (Index("ix_label_events_index_at", "index_name", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    label_id: Mapped[int] = mapped_column(Integer, index=True)
    action: Mapped[str] = mapped_column(String(8))  # put, update, delete, import
    index_name: Mapped[str] = mapped_column(String(128))
    query_id: Mapped[str] = mapped_column(String(1024))
    neighbour_id: Mapped[str] = mapped_column(String(1024))
    verdict: Mapped[str | None] = mapped_column(String(8), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    user: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(DateTime)
    # schema revision 0002: what the person saw when labelling
    model: Mapped[str | None] = mapped_column(String(512), nullable=True)
    rank: Mapped[int | None] = mapped_column(Integer, nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)


# --------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Label:
    """One current verdict of one user on one (query, neighbour) pair of one index."""

    id: int
    index: str
    model: str
    query_id: str
    neighbour_id: str
    rank: int | None
    score: float | None
    verdict: str
    reason: str | None
    note: str
    user: str
    created: datetime
    updated: datetime

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created"], d["updated"] = self.created.isoformat(), self.updated.isoformat()
        return d


def _now() -> datetime:
    """UTC now, naive (what every backend stores the same way)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _naive_utc(value: date | datetime | str, end: bool = False) -> datetime:
    """A filter bound as naive UTC; a plain date means the start (or, with ``end``, the end) of that day."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value) if "T" in value or " " in value else date.fromisoformat(value)
    if not isinstance(value, datetime):
        value = datetime.combine(value, time.max if end else time.min)
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _check(verdict: str | None, reason: str | None) -> None:
    if verdict is not None and verdict not in VERDICTS:
        raise LabelError(f"unknown verdict {verdict!r}; use one of {', '.join(VERDICTS)}")
    if reason is not None and reason not in REASONS:
        raise LabelError(f"unknown reason {reason!r}; use one of {', '.join(REASONS)}")


def normalise_reason(reason: str | None) -> str | None:
    """Accept a reason key or its display text ('background shortcut' -> 'background_shortcut'); '' -> None."""
    if reason is None or str(reason).strip() == "":
        return None
    r = str(reason).strip()
    if r in REASONS:
        return r
    for key, text in REASONS.items():
        if r.lower() == text:
            return key
    raise LabelError(f"unknown reason {reason!r}; use one of {', '.join(REASONS)}")


# --------------------------------------------------------------------------------------------- engines


_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False}, pool_size=8,
                           max_overflow=16, pool_timeout=120)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised through every test
        dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event emit BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # pragma: no cover
        # Take the write lock at the start: no deferred read->write upgrade, so writers never deadlock.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def get_engine(url: str) -> Engine:
    """One engine per URL per process (connection pools are shared by every store on the same database)."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                path = url.split("///", 1)[1] if "///" in url else ""
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                engine = _sqlite_engine(url)
            else:
                engine = create_engine(url, pool_pre_ping=True)
            try:
                from .label_migrations import upgrade

                upgrade(engine)
            except Exception as exc:  # noqa: BLE001 - reported to a person
                raise LabelError(f"cannot open the label database {_safe_url(url)}: {exc}") from None
            _ENGINES[url] = engine
        return engine


def _safe_url(url: str) -> str:
    """The URL without a password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "<label database>"


def default_url(index_name: str, root: str | os.PathLike | None = None) -> str:
    """``$SIMX_LABELS_URL`` if set, else ``sqlite:///ROOT/NAME/labels.sqlite`` beside the index."""
    env = os.environ.get(URL_ENV)
    if env:
        return env
    from .index.layout import index_dir

    return "sqlite:///" + str((index_dir(index_name, root) / DB_FILE).resolve())


def open_labels(index_name: str | None = None, root: str | os.PathLike | None = None, url: str | None = None
                ) -> "LabelStore":
    """The label store for an index: ``url`` if given, else :func:`default_url` of ``index_name``."""
    if url is None:
        if index_name is None:
            env = os.environ.get(URL_ENV)
            if not env:
                raise LabelError("open_labels needs an index name or a database URL")
            url = env
        else:
            url = default_url(index_name, root)
    return LabelStore(url)


# --------------------------------------------------------------------------------------------- the store


class LabelStore:
    """Verdicts on pairs in one SQL database (any number of indexes and users)."""

    def __init__(self, url: str):
        self.url = url
        self.engine = get_engine(url)

    def __repr__(self) -> str:
        return f"LabelStore({_safe_url(self.url)!r})"

    @property
    def schema_version(self) -> str:
        """The Alembic revision of the database's schema (see :mod:`simx.label_migrations`)."""
        from .label_migrations import current_revision

        with self.engine.connect() as conn:
            return current_revision(conn) or ""

    # -- writing ---------------------------------------------------------------------------------------------
    def put(self, index: str, query_id: str, neighbour_id: str, verdict: str, reason: str | None = None,
            note: str = "", user: str = "anonymous", model: str = "", rank: int | None = None,
            score: float | None = None) -> Label:
        """Create or replace ``user``'s verdict on (``query_id``, ``neighbour_id``) in ``index``; returns it."""
        reason = normalise_reason(reason)
        _check(verdict, reason)
        if not index or not query_id or not neighbour_id:
            raise LabelError("a label needs an index, a query id and a neighbour id")
        user = (user or "anonymous").strip() or "anonymous"
        now = _now()
        values = dict(index_name=str(index), model=str(model or ""), query_id=str(query_id),
                      neighbour_id=str(neighbour_id), rank=None if rank is None else int(rank),
                      score=None if score is None else float(score), verdict=verdict, reason=reason,
                      note=str(note or ""), user=user, created=now, updated=now)
        update = {k: values[k] for k in ("model", "rank", "score", "verdict", "reason", "note", "updated")}
        key = (_LabelRow.index_name == values["index_name"], _LabelRow.query_id == values["query_id"],
               _LabelRow.neighbour_id == values["neighbour_id"], _LabelRow.user == user)
        dialect = self.engine.dialect.name
        with self.engine.begin() as conn:
            if dialect in ("sqlite", "postgresql"):
                if dialect == "sqlite":
                    from sqlalchemy.dialects.sqlite import insert as dialect_insert
                else:
                    from sqlalchemy.dialects.postgresql import insert as dialect_insert
                stmt = dialect_insert(_LabelRow).values(**values)
                stmt = stmt.on_conflict_do_update(index_elements=["index_name", "query_id", "neighbour_id", "user"],
                                                  set_=update)
                conn.execute(stmt)
            else:  # portable fallback: update, else insert (a racing insert turns into an update)
                res = conn.execute(_LabelRow.__table__.update().where(*key).values(**update))
                if res.rowcount == 0:
                    try:
                        with conn.begin_nested():
                            conn.execute(_LabelRow.__table__.insert().values(**values))
                    except IntegrityError:
                        conn.execute(_LabelRow.__table__.update().where(*key).values(**update))
            row = conn.execute(select(_LabelRow.__table__).where(*key)).one()
            self._event(conn, "put", row)
        return _label_from_mapping(row._mapping)

    def update(self, label_id: int, verdict: str | None = None, reason: str | None = "__keep__",
               note: str | None = None, user: str | None = None) -> Label:
        """Edit one label by id (only the given fields; ``reason=None`` clears the reason)."""
        changes: dict[str, Any] = {}
        if verdict is not None:
            changes["verdict"] = verdict
        if reason != "__keep__":
            changes["reason"] = normalise_reason(reason)
        if note is not None:
            changes["note"] = str(note)
        _check(changes.get("verdict"), changes.get("reason"))
        changes["updated"] = _now()
        table = _LabelRow.__table__
        with self.engine.begin() as conn:
            if user is not None and user != self._user_of(conn, label_id):
                # moving a label to another user would collide with that user's own row: re-put instead
                raise LabelError("a label's user cannot be changed; label the pair again as the other user")
            res = conn.execute(table.update().where(table.c.id == int(label_id)).values(**changes))
            if res.rowcount == 0:
                raise LabelError(f"no label with id {label_id}")
            row = conn.execute(select(table).where(table.c.id == int(label_id))).one()
            self._event(conn, "update", row)
        return _label_from_mapping(row._mapping)

    def delete(self, label_id: int) -> bool:
        """Delete one label by id; False when there was none."""
        table = _LabelRow.__table__
        with self.engine.begin() as conn:
            row = conn.execute(select(table).where(table.c.id == int(label_id))).one_or_none()
            if row is None:
                return False
            conn.execute(delete(table).where(table.c.id == int(label_id)))
            self._event(conn, "delete", row)
        return True

    @staticmethod
    def _user_of(conn, label_id: int) -> str | None:
        t = _LabelRow.__table__
        return conn.execute(select(t.c.user).where(t.c.id == int(label_id))).scalar_one_or_none()

    @staticmethod
    def _event(conn, action: str, row) -> None:
        m = row._mapping
        conn.execute(_EventRow.__table__.insert().values(
            label_id=m["id"], action=action, index_name=m["index_name"], query_id=m["query_id"],
            neighbour_id=m["neighbour_id"], verdict=m["verdict"], reason=m["reason"], note=m["note"] or "",
            user=m["user"], at=_now(), model=m["model"], rank=m["rank"], score=m["score"]))

    # -- reading ---------------------------------------------------------------------------------------------
    def _where(self, index=None, verdict=None, reason=None, user=None, since=None, until=None, query_id=None,
               neighbour_id=None) -> list:
        t = _LabelRow.__table__
        conds = []

        def many(col, value):
            if value is None:
                return
            if isinstance(value, (list, tuple, set, frozenset)):
                if value:
                    conds.append(col.in_(list(value)))
            else:
                conds.append(col == value)

        many(t.c.index_name, index)
        many(t.c.verdict, verdict)
        if reason is not None:
            many(t.c.reason, [normalise_reason(r) for r in reason] if isinstance(reason, (list, tuple, set))
                 else normalise_reason(reason))
        many(t.c.user, user)
        many(t.c.query_id, query_id)
        many(t.c.neighbour_id, neighbour_id)
        if since is not None:
            conds.append(t.c.updated >= _naive_utc(since))
        if until is not None:
            conds.append(t.c.updated <= _naive_utc(until, end=True))
        return conds

    def list(self, index: str | Sequence[str] | None = None, verdict: str | Sequence[str] | None = None,
             reason: str | Sequence[str] | None = None, user: str | Sequence[str] | None = None,
             since: date | datetime | str | None = None, until: date | datetime | str | None = None,
             query_id: str | Sequence[str] | None = None, neighbour_id: str | Sequence[str] | None = None,
             limit: int | None = None, offset: int = 0) -> list[Label]:
        """Labels matching every given filter (a list means "any of"), newest first. ``since``/``until`` bound the
        last update time (a date covers the whole day, UTC)."""
        t = _LabelRow.__table__
        q = select(t).where(*self._where(index, verdict, reason, user, since, until, query_id, neighbour_id))
        q = q.order_by(t.c.updated.desc(), t.c.id.desc()).offset(int(offset))
        if limit is not None:
            q = q.limit(int(limit))
        with self.engine.connect() as conn:
            return [_label_from_mapping(r._mapping) for r in conn.execute(q)]

    def get(self, label_id: int) -> Label | None:
        t = _LabelRow.__table__
        with self.engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.id == int(label_id))).one_or_none()
        return None if row is None else _label_from_mapping(row._mapping)

    def find(self, index: str, query_id: str, neighbour_id: str, user: str | None = None) -> list[Label]:
        """Every user's label on one pair (or only ``user``'s)."""
        return self.list(index=index, query_id=query_id, neighbour_id=neighbour_id, user=user)

    def count(self, **filters: Any) -> int:
        t = _LabelRow.__table__
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t).where(*self._where(**filters))).scalar_one())

    def counts(self, **filters: Any) -> dict[str, Any]:
        """``{"total": n, "verdict": {good, bad}, "reason": {...}, "user": {...}}`` over the filtered labels."""
        t = _LabelRow.__table__
        where = self._where(**filters)
        out: dict[str, Any] = {"total": 0, "verdict": {v: 0 for v in VERDICTS}, "reason": {}, "user": {}}
        with self.engine.connect() as conn:
            out["total"] = int(conn.execute(select(func.count()).select_from(t).where(*where)).scalar_one())
            for col, name in ((t.c.verdict, "verdict"), (t.c.reason, "reason"), (t.c.user, "user")):
                for value, n in conn.execute(select(col, func.count()).where(*where).group_by(col)):
                    out[name][value if value is not None else "none"] = int(n)
        return out

    def labelled_pairs(self, index: str, user: str | None = None) -> set[tuple[str, str]]:
        """(query_id, neighbour_id) of every labelled pair of ``index`` (by anyone, or by ``user``)."""
        t = _LabelRow.__table__
        q = select(t.c.query_id, t.c.neighbour_id).where(*self._where(index=index, user=user)).distinct()
        with self.engine.connect() as conn:
            return {(a, b) for a, b in conn.execute(q)}

    def users(self, index: str | None = None) -> list[str]:
        t = _LabelRow.__table__
        q = select(t.c.user).where(*self._where(index=index)).distinct().order_by(t.c.user)
        with self.engine.connect() as conn:
            return [u for (u,) in conn.execute(q)]

    def history(self, label_id: int | None = None, index: str | None = None) -> list[dict[str, Any]]:
        """The append-only event log (oldest first), for one label or one index."""
        t = _EventRow.__table__
        q = select(t)
        if label_id is not None:
            q = q.where(t.c.label_id == int(label_id))
        if index is not None:
            q = q.where(t.c.index_name == index)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q.order_by(t.c.id))]
        for r in rows:
            r["at"] = _aware(r["at"]).isoformat()
            r["index"] = r.pop("index_name")
        return rows

    def to_frame(self, **filters: Any):
        """The filtered labels as a pandas DataFrame with :data:`COLUMNS`."""
        import pandas as pd

        rows = [lab.to_dict() for lab in self.list(**filters)]
        df = pd.DataFrame(rows, columns=list(COLUMNS))
        for col in ("created", "updated"):
            df[col] = pd.to_datetime(df[col], utc=True, format="ISO8601")
        return df

    # -- import --------------------------------------------------------------------------------------------
    def import_labels(self, rows: Iterable[Mapping[str, Any]], index: str | None = None) -> dict[str, int]:
        """Merge exported labels (rows of :meth:`export_csv` / :meth:`export_jsonl`) into this store.

        Each row is checked first (verdict, reason, ids, user, timestamps); one bad row refuses the whole import
        with the numbers of every bad row, and nothing is written. Then, in one transaction, a row becomes the
        current verdict of its (index, query, neighbour, user) unless the store already holds a newer one
        (``updated`` later): merging two team members' exports in any order gives the same store. ``index``
        overrides the rows' index (importing another index's labels). Every applied row is logged as an
        ``import`` event. Returns ``{"added": n, "replaced": n, "kept_newer": n}``.
        """
        parsed, problems = [], []
        for i, row in enumerate(rows, start=1):
            try:
                parsed.append(_import_row(row, index))
            except (LabelError, ValueError, TypeError) as exc:
                problems.append(f"row {i}: {exc}")
        if problems:
            shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
            raise LabelError(f"nothing imported, {len(problems)} bad row(s): {shown}")
        table = _LabelRow.__table__
        out = {"added": 0, "replaced": 0, "kept_newer": 0}
        with self.engine.begin() as conn:
            for values in parsed:
                key = (table.c.index_name == values["index_name"], table.c.query_id == values["query_id"],
                       table.c.neighbour_id == values["neighbour_id"], table.c.user == values["user"])
                current = conn.execute(select(table.c.id, table.c.updated).where(*key)).one_or_none()
                if current is None:
                    conn.execute(table.insert().values(**values))
                    out["added"] += 1
                elif current.updated < values["updated"]:
                    conn.execute(table.update().where(*key).values(
                        **{k: values[k] for k in ("model", "rank", "score", "verdict", "reason", "note", "updated")}))
                    out["replaced"] += 1
                else:
                    out["kept_newer"] += 1
                    continue
                self._event(conn, "import", conn.execute(select(table).where(*key)).one())
        return out

    # -- exports ---------------------------------------------------------------------------------------------
    def export_csv(self, target: str | os.PathLike | IO[str] | None = None, **filters: Any) -> str:
        """Write the filtered labels as CSV (header = :data:`COLUMNS`); returns the text."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
        w.writeheader()
        for lab in self.list(**filters):
            w.writerow({k: ("" if v is None else v) for k, v in lab.to_dict().items()})
        return _emit(buf.getvalue(), target)

    def export_jsonl(self, target: str | os.PathLike | IO[str] | None = None, **filters: Any) -> str:
        """Write the filtered labels as JSON lines (one object per label); returns the text."""
        text = "".join(json.dumps(lab.to_dict(), ensure_ascii=False) + "\n" for lab in self.list(**filters))
        return _emit(text, target)

    def triplets(self, index: str, item_labels: Mapping[str, Any] | None = None,
                 neighbours: Mapping[str, Iterable[str]] | None = None, user: str | Sequence[str] | None = None
                 ) -> list[dict[str, Any]]:
        """Hard-negative triplets of ``index``: one row per (query, positive, negative).

        negative: a neighbour labelled bad for that query (by any of the selected users).
        positive: a neighbour labelled good for that query, or, when ``item_labels`` (id -> class label, or a list
        of an item's labels) is given, a neighbour of that query (from ``neighbours`` when given, else among its
        labelled neighbours) that shares a label with the query (:mod:`simx.relevance`). A pair that anyone labelled bad is never a positive. Queries with no bad
        neighbour or no positive give no triplet. Rows: query, positive, negative, positive_source
        (``good``/``same_label``), reason (the negative's), sorted for a stable file.
        """
        labels = self.list(index=index, user=user)
        good: dict[str, set[str]] = {}
        bad: dict[str, dict[str, str | None]] = {}
        for lab in labels:
            if lab.verdict == "bad":
                bad.setdefault(lab.query_id, {})
                bad[lab.query_id].setdefault(lab.neighbour_id, lab.reason)
            else:
                good.setdefault(lab.query_id, set()).add(lab.neighbour_id)
        rows: list[dict[str, Any]] = []
        for q in sorted(bad):
            negatives = bad[q]
            positives: dict[str, str] = {p: "good" for p in good.get(q, set()) if p not in negatives and p != q}
            if item_labels is not None and label_set(item_labels.get(q)):
                pool = set(neighbours.get(q, ())) if neighbours is not None else set()
                pool |= good.get(q, set()) | set(negatives)
                q_labels = label_set(item_labels.get(q))
                for n in pool:
                    if n != q and n not in negatives and n not in positives and \
                            not q_labels.isdisjoint(label_set(item_labels.get(n))):
                        positives[n] = "same_label"
            for p in sorted(positives):
                for n in sorted(negatives):
                    rows.append({"query": q, "positive": p, "negative": n, "positive_source": positives[p],
                                 "reason": negatives[n] or ""})
        return rows

    def export_triplets(self, target: str | os.PathLike | IO[str] | None = None, index: str = "",
                        item_labels: Mapping[str, Any] | None = None,
                        neighbours: Mapping[str, Iterable[str]] | None = None,
                        paths: Mapping[str, str] | None = None, fmt: str | None = None,
                        user: str | Sequence[str] | None = None) -> str:
        """Write :meth:`triplets` as CSV (default) or JSONL (``fmt="jsonl"`` or a ``.jsonl`` target). With
        ``paths`` (id -> image path) the rows also carry ``query_path``, ``positive_path``, ``negative_path``."""
        if not index:
            raise LabelError("export_triplets needs the index name")
        rows = self.triplets(index, item_labels=item_labels, neighbours=neighbours, user=user)
        if paths is not None:
            for r in rows:
                for role in ("query", "positive", "negative"):
                    r[f"{role}_path"] = paths.get(r[role], "")
        if fmt is None:
            fmt = "jsonl" if isinstance(target, (str, os.PathLike)) and str(target).endswith(".jsonl") else "csv"
        if fmt == "jsonl":
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        else:
            fields = ["query", "positive", "negative", "positive_source", "reason"]
            if paths is not None:
                fields += ["query_path", "positive_path", "negative_path"]
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
            text = buf.getvalue()
        return _emit(text, target)


def _import_row(row: Mapping[str, Any], index: str | None) -> dict[str, Any]:
    """One exported row as column values of ``labels`` (raises LabelError / ValueError when it is not valid)."""
    def text(key: str) -> str:
        value = row.get(key)
        return "" if value is None else str(value).strip()

    verdict = text("verdict")
    reason = normalise_reason(text("reason") or None)
    _check(verdict, reason)
    values = dict(index_name=index or text("index"), model=text("model"), query_id=text("query_id"),
                  neighbour_id=text("neighbour_id"), verdict=verdict, reason=reason, note=str(row.get("note") or ""),
                  user=text("user"))
    for key in ("index_name", "query_id", "neighbour_id", "user"):
        if not values[key]:
            raise LabelError(f"missing {key.replace('_name', '')}")
    values["rank"] = int(float(text("rank"))) if text("rank") else None
    values["score"] = float(text("score")) if text("score") else None
    now = _now()
    values["created"] = _naive_utc(text("created")) if text("created") else now
    values["updated"] = _naive_utc(text("updated")) if text("updated") else values["created"]
    return values


def _label_from_mapping(m: Mapping[str, Any]) -> Label:
    return Label(
        id=int(m["id"]), index=m["index_name"], model=m["model"] or "", query_id=m["query_id"],
        neighbour_id=m["neighbour_id"], rank=m["rank"], score=m["score"], verdict=m["verdict"], reason=m["reason"],
        note=m["note"] or "", user=m["user"], created=_aware(m["created"]), updated=_aware(m["updated"]),
    )


def _emit(text: str, target: str | os.PathLike | IO[str] | None) -> str:
    """Return ``text``, writing it to a path (atomically) or a text stream first when given."""
    if target is None:
        return text
    if isinstance(target, (str, os.PathLike)):
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    else:
        target.write(text)
    return text


__all__ = ["LabelStore", "Label", "LabelError", "open_labels", "default_url", "get_engine", "VERDICTS", "REASONS",
           "COLUMNS", "URL_ENV", "DB_FILE", "normalise_reason"]
