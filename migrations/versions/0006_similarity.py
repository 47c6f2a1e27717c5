"""similarity measures: one table for every measure a spec chooses, and the measure_agreement tables

`measure: {similarity: [...]}` stores each heatmap cell of each chosen measure with the measure's name
and its options (JSON, defaults filled). Table cka is unchanged: linear CKA's minibatch estimator
(and CKA after PC1 removal) stay where queries read them.

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

T, I, D = sa.Text, sa.Integer, sa.Double
TABLES = {  # name: (primary key columns, value columns)
    "similarity": ([("analysis_id", T), ("measure", T), ("options", T), ("run_a", T), ("epoch_a", I), ("layer_a", I),
                    ("run_b", T), ("epoch_b", I), ("layer_b", I)], [("value", D), ("examples", I)]),
    "measure_correspondence": ([("analysis_id", T), ("measure", T), ("run_a", T), ("run_b", T)],
                               [("layers", I), ("correct", I), ("accuracy", D)]),
    "measure_blocks": ([("analysis_id", T), ("measure", T), ("run_id", T), ("block", I)],
                       [("start_layer", I), ("end_layer", I), ("size_fraction", D), ("mean_similarity", D),
                        ("mean_pc1", D), ("score", D)]),
    "measure_block_overlap": ([("analysis_id", T), ("run_id", T), ("measure_a", T), ("measure_b", T)],
                              [("layers_agree", D), ("jaccard", D)]),
    "measure_rank_agreement": ([("analysis_id", T), ("measure_a", T), ("measure_b", T)], [("spearman", D), ("cells", I)]),
}


def upgrade() -> None:
    for name, (keys, values) in TABLES.items():
        op.create_table(name, *(sa.Column(c, kind, primary_key=True) for c, kind in keys),
                        *(sa.Column(c, kind) for c, kind in values))


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
