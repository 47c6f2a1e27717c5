"""views: run_accuracy, class_accuracy, probe_accuracy, block_sizes

The same SQL runs on DuckDB and PostgreSQL: runs.params is JSON text, read with
CAST(params AS JSON) ->> 'key' (both dialects); per-run sums are correlated subqueries rather than
GROUP BY over joined columns (PostgreSQL accepts functionally dependent columns, DuckDB does not);
averages are cast to DOUBLE PRECISION (PostgreSQL's avg of integers is NUMERIC).

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Depth is a layer count; width a multiplier that other families may give as a fraction.
_ARCH = ("CAST(CAST(r.params AS JSON) ->> 'depth' AS INTEGER) AS depth, "
         "CAST(CAST(r.params AS JSON) ->> 'width' AS DOUBLE PRECISION) AS width")

VIEWS = {
    # The last epoch's metrics of every run (NULL for a run that finished no epoch).
    "run_accuracy": f"""
        WITH last AS (SELECT run_id, max(epoch) AS epoch FROM metrics WHERE name = 'eval_acc' GROUP BY run_id)
        SELECT r.run_id, r.name, r.family, r.params, {_ARCH}, r.dataset, r.train_examples, r.seed, r.status,
               last.epoch, acc.value AS eval_acc, loss.value AS eval_loss, tacc.value AS train_acc,
               tloss.value AS train_loss
        FROM runs r
        LEFT JOIN last ON last.run_id = r.run_id
        LEFT JOIN metrics acc ON acc.run_id = r.run_id AND acc.epoch = last.epoch AND acc.name = 'eval_acc'
        LEFT JOIN metrics loss ON loss.run_id = r.run_id AND loss.epoch = last.epoch AND loss.name = 'eval_loss'
        LEFT JOIN metrics tacc ON tacc.run_id = r.run_id AND tacc.epoch = last.epoch AND tacc.name = 'train_acc'
        LEFT JOIN metrics tloss ON tloss.run_id = r.run_id AND tloss.epoch = last.epoch AND tloss.name = 'train_loss'
    """,
    # Accuracy of every run on every class of the evaluation set, from its predictions.
    "class_accuracy": f"""
        SELECT p.run_id, r.name, r.family, r.params, {_ARCH}, r.dataset, r.seed, p.label AS class,
               count(DISTINCT p.example) AS examples,
               CAST(avg(CASE WHEN p.prediction = p.label THEN 1 ELSE 0 END) AS DOUBLE PRECISION) AS accuracy,
               avg(p.confidence) AS mean_confidence
        FROM predictions p JOIN runs r ON r.run_id = p.run_id
        GROUP BY p.run_id, r.name, r.family, r.params, r.dataset, r.seed, p.label
    """,
    # Linear-probe accuracy at every probe point, with the layer's name and the probe's options.
    "probe_accuracy": f"""
        SELECT p.analysis_id, a.options, p.run_id, r.name, r.family, r.params, {_ARCH}, r.seed, p.layer,
               l.name AS layer_name, l.stage, p.accuracy, p.train_accuracy
        FROM probes p
        JOIN runs r ON r.run_id = p.run_id
        JOIN analyses a ON a.analysis_id = p.analysis_id
        LEFT JOIN layers l ON l.run_id = p.run_id AND l.layer = p.layer
    """,
    # Block structure of every run: largest block and total fraction of depth inside blocks.
    "block_sizes": f"""
        SELECT s.analysis_id, s.run_id, r.name, r.family, r.params, {_ARCH}, r.dataset, r.train_examples, r.seed,
               s.num_blocks, s.largest_fraction,
               COALESCE((SELECT sum(b.size_fraction) FROM blocks b
                         WHERE b.analysis_id = s.analysis_id AND b.run_id = s.run_id), 0.0) AS block_fraction,
               s.score
        FROM block_scores s JOIN runs r ON r.run_id = s.run_id
    """,
}


def upgrade() -> None:
    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
