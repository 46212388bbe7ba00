"""The event log also keeps what the person saw when they labelled: the model, the neighbour's rank and its score.

Before this revision an update overwrote the rank and score in ``labels`` and the log had only the verdict, so the
score a verdict was given for was lost after a re-rank. Old events keep NULL (unknown).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("label_events") as batch:
        batch.add_column(sa.Column("model", sa.String(512), nullable=True))
        batch.add_column(sa.Column("rank", sa.Integer, nullable=True))
        batch.add_column(sa.Column("score", sa.Float, nullable=True))
    op.create_index("ix_label_events_index_at", "label_events", ["index_name", "at"])


def downgrade() -> None:
    op.drop_index("ix_label_events_index_at", table_name="label_events")
    with op.batch_alter_table("label_events") as batch:
        batch.drop_column("score")
        batch.drop_column("rank")
        batch.drop_column("model")
