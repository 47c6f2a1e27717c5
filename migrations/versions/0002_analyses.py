"""analysis tables: pc_scores, pc_cosines, blocks, block_scores, predictions, probes, ablations, error_classes, error_agreement

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _key(name, type_=sa.Text):
    return sa.Column(name, type_, primary_key=True)


def upgrade() -> None:
    op.create_table("pc_scores", _key("analysis_id"), _key("run_id"), _key("layer", sa.Integer),
                    _key("example", sa.Integer), sa.Column("score", sa.Double))
    op.create_table("pc_cosines", _key("analysis_id"), _key("run_a"), _key("layer_a", sa.Integer), _key("run_b"),
                    _key("layer_b", sa.Integer), sa.Column("value", sa.Double))
    op.create_table("blocks", _key("analysis_id"), _key("run_id"), _key("block", sa.Integer),
                    sa.Column("start_layer", sa.Integer), sa.Column("end_layer", sa.Integer),
                    sa.Column("size_fraction", sa.Double), sa.Column("mean_cka", sa.Double), sa.Column("mean_pc1", sa.Double),
                    sa.Column("survives_pc1_removal", sa.Boolean), sa.Column("score", sa.Double))
    op.create_table("block_scores", _key("analysis_id"), _key("run_id"), sa.Column("score", sa.Double),
                    sa.Column("num_blocks", sa.Integer), sa.Column("largest_fraction", sa.Double))
    op.create_table("predictions", _key("analysis_id"), _key("run_id"), _key("example", sa.Integer),
                    sa.Column("label", sa.Integer), sa.Column("prediction", sa.Integer), sa.Column("confidence", sa.Double))
    op.create_table("probes", _key("analysis_id"), _key("run_id"), _key("layer", sa.Integer),
                    sa.Column("accuracy", sa.Double), sa.Column("train_accuracy", sa.Double))
    op.create_table("ablations", _key("analysis_id"), _key("run_id"), _key("target"),
                    sa.Column("start_layer", sa.Integer), sa.Column("end_layer", sa.Integer),
                    sa.Column("accuracy", sa.Double), sa.Column("accuracy_drop", sa.Double))
    op.create_table("error_classes", _key("analysis_id"), _key("class", sa.Integer), sa.Column("mean_a", sa.Double),
                    sa.Column("mean_b", sa.Double), sa.Column("statistic", sa.Double), sa.Column("p_value", sa.Double),
                    sa.Column("q_value", sa.Double), sa.Column("significant", sa.Boolean))
    op.create_table("error_agreement", _key("analysis_id"), _key("run_a"), _key("run_b"),
                    sa.Column("both_right", sa.Double), sa.Column("both_wrong", sa.Double),
                    sa.Column("a_only_right", sa.Double), sa.Column("b_only_right", sa.Double), sa.Column("agreement", sa.Double))


def downgrade() -> None:
    for table in ("error_agreement", "error_classes", "ablations", "probes", "predictions", "block_scores", "blocks",
                  "pc_cosines", "pc_scores"):
        op.drop_table(table)
