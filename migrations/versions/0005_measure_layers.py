"""measurement settings: probe-point layers per measurement setting, analyses name theirs

Two specs may measure one run with different probe points; its `layers` rows are kept per setting
(`measure_id`, a hash of the spec's `measure` section) and every analysis records the setting it
used, so a heatmap's layer indices are always read against the probe points that produced them.
Rows written before this revision get measure_id '' (their setting was not recorded).

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_PROBE_ACCURACY = """
    SELECT p.analysis_id, a.options, p.run_id, r.name, r.family, r.params,
           CAST(CAST(r.params AS JSON) ->> 'depth' AS INTEGER) AS depth,
           CAST(CAST(r.params AS JSON) ->> 'width' AS DOUBLE PRECISION) AS width, r.seed, p.layer,
           l.name AS layer_name, l.stage, p.accuracy, p.train_accuracy
    FROM probes p
    JOIN runs r ON r.run_id = p.run_id
    JOIN analyses a ON a.analysis_id = p.analysis_id
    LEFT JOIN layers l ON l.run_id = p.run_id AND l.measure_id = a.measure_id AND l.layer = p.layer
"""


def _create_layers(table: str, per_setting: bool) -> None:
    setting = [sa.Column("measure_id", sa.Text, primary_key=True)] if per_setting else []
    op.create_table(
        table,
        sa.Column("run_id", sa.Text, primary_key=True),
        *setting,
        sa.Column("layer", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("stage", sa.Integer),
        sa.Column("features", sa.Integer),
    )


def upgrade() -> None:
    op.add_column("analyses", sa.Column("measure_id", sa.Text, server_default="", nullable=False))
    # The primary key changes, which DuckDB cannot ALTER: rebuild the table (the view reading it first).
    op.execute("DROP VIEW probe_accuracy")
    _create_layers("layers_0005", per_setting=True)
    op.execute("INSERT INTO layers_0005 SELECT run_id, '', layer, name, stage, features FROM layers")
    op.drop_table("layers")
    op.rename_table("layers_0005", "layers")
    op.execute(f"CREATE VIEW probe_accuracy AS {_PROBE_ACCURACY}")


def downgrade() -> None:
    op.execute("DROP VIEW probe_accuracy")
    _create_layers("layers_0004", per_setting=False)
    # One setting per run: where a run was measured with several, one of them is kept.
    op.execute("INSERT INTO layers_0004 SELECT run_id, layer, max(name), max(stage), max(features) FROM layers "
               "GROUP BY run_id, layer")
    op.drop_table("layers")
    op.rename_table("layers_0004", "layers")
    op.drop_column("analyses", "measure_id")
    op.execute("CREATE VIEW probe_accuracy AS " + _PROBE_ACCURACY.replace(" AND l.measure_id = a.measure_id", ""))
