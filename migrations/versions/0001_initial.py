"""initial schema: specs, runs, metrics, layers, analyses, cka, pcs

Revision ID: 0001
Revises:
"""
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "specs",
        sa.Column("spec_hash", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("path", sa.Text),
        sa.Column("yaml", sa.Text, nullable=False),
        sa.Column("created_at", TZ),
    )
    op.create_table(
        "runs",
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("family", sa.Text, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("dataset", sa.Text, nullable=False),
        sa.Column("train_size", sa.Double),
        sa.Column("train_examples", sa.Integer),
        sa.Column("subset_seed", sa.Integer),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("spec_hash", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("epochs_done", sa.Integer),
        sa.Column("num_params", sa.Integer),
        sa.Column("train_seconds", sa.Double),
        sa.Column("measure_seconds", sa.Double),
        sa.Column("device", sa.Text),
        sa.Column("versions", sa.Text),
        sa.Column("git_commit", sa.Text),
        sa.Column("created_at", TZ),
        sa.Column("updated_at", TZ),
    )
    op.create_table(
        "metrics",
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("epoch", sa.Integer, primary_key=True),
        sa.Column("value", sa.Double),
    )
    op.create_table(
        "layers",
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("layer", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("stage", sa.Integer),
        sa.Column("features", sa.Integer),
    )
    op.create_table(
        "analyses",
        sa.Column("analysis_id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("run_ids", sa.Text, nullable=False),
        sa.Column("options", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", TZ),
    )
    op.create_table(
        "cka",
        sa.Column("analysis_id", sa.Text, primary_key=True),
        sa.Column("run_a", sa.Text, primary_key=True),
        sa.Column("epoch_a", sa.Integer, primary_key=True),
        sa.Column("layer_a", sa.Integer, primary_key=True),
        sa.Column("run_b", sa.Text, primary_key=True),
        sa.Column("epoch_b", sa.Integer, primary_key=True),
        sa.Column("layer_b", sa.Integer, primary_key=True),
        sa.Column("pc_removed", sa.Boolean, primary_key=True),
        sa.Column("value", sa.Double),
        sa.Column("estimator", sa.Text),
    )
    op.create_table(
        "pcs",
        sa.Column("analysis_id", sa.Text, primary_key=True),
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("layer", sa.Integer, primary_key=True),
        sa.Column("pc1_fraction", sa.Double),
        sa.Column("lambda1", sa.Double),
        sa.Column("total_variance", sa.Double),
    )


def downgrade() -> None:
    for table in ("pcs", "cka", "analyses", "layers", "metrics", "runs", "specs"):
        op.drop_table(table)
