"""The label tables of simx 0.1: current verdicts (one per index, pair and user) and the append-only event log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "labels",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("index_name", sa.String(128), nullable=False),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("query_id", sa.String(1024), nullable=False),
        sa.Column("neighbour_id", sa.String(1024), nullable=False),
        sa.Column("rank", sa.Integer, nullable=True),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("verdict", sa.String(8), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("user", sa.String(128), nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("updated", sa.DateTime, nullable=False),
        sa.UniqueConstraint("index_name", "query_id", "neighbour_id", "user", name="uq_label_pair_user"),
    )
    op.create_index("ix_labels_index_verdict", "labels", ["index_name", "verdict"])
    op.create_index("ix_labels_updated", "labels", ["updated"])
    op.create_table(
        "label_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("label_id", sa.Integer, nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("index_name", sa.String(128), nullable=False),
        sa.Column("query_id", sa.String(1024), nullable=False),
        sa.Column("neighbour_id", sa.String(1024), nullable=False),
        sa.Column("verdict", sa.String(8), nullable=True),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("user", sa.String(128), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_label_events_label_id", "label_events", ["label_id"])


def downgrade() -> None:
    op.drop_table("label_events")
    op.drop_table("labels")
