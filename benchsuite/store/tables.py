"""The results schema (SQLAlchemy Core). Alembic migrations in migrations/ create it; keep them in step.

Long format, one row per value, text keys computed in Python (no sequences), so merges are
idempotent and the same on DuckDB and PostgreSQL. JSON is stored as text.
"""

from sqlalchemy import Boolean, Column, Double, Integer, MetaData, Table, Text, DateTime

metadata = MetaData()

specs = Table(
    "specs", metadata,
    Column("spec_hash", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("path", Text),
    Column("yaml", Text, nullable=False),
    Column("created_at", DateTime(timezone=True)),
)

runs = Table(
    "runs", metadata,
    Column("run_id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("family", Text, nullable=False),
    Column("params", Text, nullable=False),
    Column("dataset", Text, nullable=False),
    Column("train_size", Double),  # as declared: a count, a fraction, or null (all)
    Column("train_examples", Integer),  # examples actually trained on
    Column("subset_seed", Integer),
    Column("seed", Integer, nullable=False),
    Column("config", Text, nullable=False),
    Column("spec_hash", Text),
    Column("status", Text, nullable=False),  # running, complete, failed
    Column("error", Text),
    Column("epochs_done", Integer),
    Column("num_params", Integer),
    Column("train_seconds", Double),
    Column("measure_seconds", Double),
    Column("device", Text),
    Column("versions", Text),
    Column("git_commit", Text),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
)

metrics = Table(
    "metrics", metadata,
    Column("run_id", Text, primary_key=True),
    Column("name", Text, primary_key=True),
    Column("epoch", Integer, primary_key=True),
    Column("value", Double),
)

layers = Table(
    "layers", metadata,
    Column("run_id", Text, primary_key=True),
    Column("measure_id", Text, primary_key=True),  # 0005: the measurement setting that chose these probe points
    Column("layer", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("stage", Integer),
    Column("features", Integer),
)

analyses = Table(
    "analyses", metadata,
    Column("analysis_id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("run_ids", Text, nullable=False),
    Column("options", Text),
    Column("status", Text, nullable=False),
    Column("error", Text),
    Column("created_at", DateTime(timezone=True)),
    Column("measure_id", Text, nullable=False, server_default=""),  # 0005: see layers
)

cka = Table(
    "cka", metadata,
    Column("analysis_id", Text, primary_key=True),
    Column("run_a", Text, primary_key=True),
    Column("epoch_a", Integer, primary_key=True),  # the checkpoint's epoch: the final one unless training_cka
    Column("layer_a", Integer, primary_key=True),
    Column("run_b", Text, primary_key=True),
    Column("epoch_b", Integer, primary_key=True),
    Column("layer_b", Integer, primary_key=True),
    Column("pc_removed", Boolean, primary_key=True),
    Column("value", Double),
    Column("estimator", Text),
)

pcs = Table(
    "pcs", metadata,
    Column("analysis_id", Text, primary_key=True),
    Column("run_id", Text, primary_key=True),
    Column("layer", Integer, primary_key=True),
    Column("pc1_fraction", Double),
    Column("lambda1", Double),
    Column("total_variance", Double),
)

# 0002: principal-component details, block structure, predictions, probes, block deletion, error patterns.

pc_scores = Table(
    "pc_scores", metadata,
    Column("analysis_id", Text, primary_key=True),
    Column("run_id", Text, primary_key=True),
    Column("layer", Integer, primary_key=True),
    Column("example", Integer, primary_key=True),
    Column("score", Double),
)

pc_cosines = Table(
    "pc_cosines", metadata,
    Column("analysis_id", Text, primary_key=True),
    Column("run_a", Text, primary_key=True),
    Column("layer_a", Integer, primary_key=True),
    Column("run_b", Text, primary_key=True),
    Column("layer_b", Integer, primary_key=True),
    Column("value", Double),
)

blocks = Table(
    "blocks", metadata,
    Column("analysis_id", Text, primary_key=True),
    Column("run_id", Text, primary_key=True),
    Column("block", Integer, primary_key=True),
    Column("start_layer", Integer),
    Column("end_layer", Integer),
    Column("size_fraction", Double),
    Column("mean_cka", Double),
    Column("mean_pc1", Double),
    Column("survives_pc1_removal", Boolean),
    Column("score", Double),
)

block_scores = Table(
    "block_scores", metadata,
    Column("analysis_id", Text, primary_key=True),
    Column("run_id", Text, primary_key=True),
    Column("score", Double),
    Column("num_blocks", Integer),
    Column("largest_fraction", Double),
)

predictions = Table(
    "predictions", metadata,
    Column("analysis_id", Text, primary_key=True),
    Column("run_id", Text, primary_key=True),
    Column("example", Integer, primary_key=True),
    Column("label", Integer),
    Column("prediction", Integer),
    Column("confidence", Double),
)

probes = Table(
    "probes", metadata,
    Column("analysis_id", Text, primary_key=True),
    Column("run_id", Text, primary_key=True),
    Column("layer", Integer, primary_key=True),
    Column("accuracy", Double),
    Column("train_accuracy", Double),
)

ablations = Table(
    "ablations", metadata,
    Column("analysis_id", Text, primary_key=True),
    Column("run_id", Text, primary_key=True),
    Column("target", Text, primary_key=True),  # a probe point's name, or "block:START-END"
    Column("start_layer", Integer),
    Column("end_layer", Integer),
    Column("accuracy", Double),
    Column("accuracy_drop", Double),
)

error_classes = Table(
    "error_classes", metadata,
    Column("analysis_id", Text, primary_key=True),
    Column("class", Integer, primary_key=True),
    Column("mean_a", Double),
    Column("mean_b", Double),
    Column("statistic", Double),
    Column("p_value", Double),
    Column("q_value", Double),
    Column("significant", Boolean),
)

error_agreement = Table(
    "error_agreement", metadata,
    Column("analysis_id", Text, primary_key=True),
    Column("run_a", Text, primary_key=True),
    Column("run_b", Text, primary_key=True),
    Column("both_right", Double),
    Column("both_wrong", Double),
    Column("a_only_right", Double),
    Column("b_only_right", Double),
    Column("agreement", Double),
)

# 0004: the paper's claims evaluated over stored results (bench claims).

claims = Table(
    "claims", metadata,
    Column("scope", Text, primary_key=True),  # the specs evaluated, comma-separated, or "all"
    Column("claim", Text, primary_key=True),  # C1 ... C8
    Column("title", Text),
    Column("statistic", Double),
    Column("uncertainty", Double),
    Column("verdict", Text),  # supported, not supported, not enough runs
    Column("meaning", Text),
    Column("note", Text),
    Column("evidence", Text),  # JSON: {"columns": [...], "rows": [[...]], "figure": {...}}
)

# 0006: every similarity measure a spec chooses (measure.similarity), with its options.

similarity = Table(
    "similarity", metadata,
    Column("analysis_id", Text, primary_key=True),
    Column("measure", Text, primary_key=True),  # a registered measure: linear_cka, rbf_cka, procrustes, ...
    Column("options", Text, primary_key=True),  # JSON, every option with defaults filled
    Column("run_a", Text, primary_key=True),
    Column("epoch_a", Integer, primary_key=True),
    Column("layer_a", Integer, primary_key=True),
    Column("run_b", Text, primary_key=True),
    Column("epoch_b", Integer, primary_key=True),
    Column("layer_b", Integer, primary_key=True),
    Column("value", Double),
    Column("examples", Integer),  # evaluation examples the value was computed from
)

# 0006: measure_agreement; `measure` is a measure's label, `name` or `name[k=v,...]` (options off their defaults).

measure_correspondence = Table(
    "measure_correspondence", metadata,
    Column("analysis_id", Text, primary_key=True),
    Column("measure", Text, primary_key=True),
    Column("run_a", Text, primary_key=True),
    Column("run_b", Text, primary_key=True),  # another seed of run_a's configuration
    Column("layers", Integer),
    Column("correct", Integer),  # probe points of run_a whose most similar one in run_b is the same
    Column("accuracy", Double),
)

measure_blocks = Table(
    "measure_blocks", metadata,
    Column("analysis_id", Text, primary_key=True),
    Column("measure", Text, primary_key=True),
    Column("run_id", Text, primary_key=True),
    Column("block", Integer, primary_key=True),
    Column("start_layer", Integer),
    Column("end_layer", Integer),
    Column("size_fraction", Double),
    Column("mean_similarity", Double),
    Column("mean_pc1", Double),
    Column("score", Double),
)

measure_block_overlap = Table(
    "measure_block_overlap", metadata,
    Column("analysis_id", Text, primary_key=True),
    Column("run_id", Text, primary_key=True),
    Column("measure_a", Text, primary_key=True),
    Column("measure_b", Text, primary_key=True),
    Column("layers_agree", Double),  # fraction of probe points both put inside, or both outside, a block
    Column("jaccard", Double),  # of the probe points inside blocks; NULL when neither measure finds one
)

measure_rank_agreement = Table(
    "measure_rank_agreement", metadata,
    Column("analysis_id", Text, primary_key=True),
    Column("measure_a", Text, primary_key=True),
    Column("measure_b", Text, primary_key=True),
    Column("spearman", Double),  # over every off-diagonal heatmap cell, within and across seeds
    Column("cells", Integer),
)
