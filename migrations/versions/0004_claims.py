"""claims: the paper's claims C1-C8 evaluated over stored results

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "claims",
        sa.Column("scope", sa.Text, primary_key=True),
        sa.Column("claim", sa.Text, primary_key=True),
        sa.Column("title", sa.Text),
        sa.Column("statistic", sa.Double),
        sa.Column("uncertainty", sa.Double),
        sa.Column("verdict", sa.Text),
        sa.Column("meaning", sa.Text),
        sa.Column("note", sa.Text),
        sa.Column("evidence", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("claims")
