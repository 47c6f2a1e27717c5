"""`bench compare A B`: two result sets (databases, or a database and a Parquet export) compared run by
run on their shared run ids, so CI can tell whether a code change altered the numbers."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

# Per run: what is compared, the SQL giving (run_id, key..., value), and how a key reads in the table.
# Rows are matched on their whole key, analysis_id included, so two measurement settings never mix.
QUANTITIES: dict[str, tuple[str, Any]] = {
    "accuracy": ("SELECT m.run_id, m.epoch, m.value FROM metrics m WHERE m.name = 'eval_acc' AND m.epoch = "
                 "(SELECT max(epoch) FROM metrics x WHERE x.run_id = m.run_id AND x.name = 'eval_acc')",
                 lambda k: f"epoch {k[0]}"),
    "cka": ("SELECT run_a, analysis_id, run_b, epoch_a, epoch_b, layer_a, layer_b, value FROM cka WHERE NOT pc_removed",
            lambda k: f"layers {k[4]} x {k[5]}"),
    "cka_pc_removed": ("SELECT run_a, analysis_id, run_b, epoch_a, epoch_b, layer_a, layer_b, value FROM cka WHERE pc_removed",
                       lambda k: f"layers {k[4]} x {k[5]}"),
    "pc1": ("SELECT run_id, analysis_id, layer, pc1_fraction FROM pcs", lambda k: f"layer {k[1]}"),
    "block_score": ("SELECT run_id, analysis_id, score FROM block_scores", lambda k: f"analysis {k[0][:8]}"),
}


@dataclass
class Tolerances:
    """Largest absolute differences that count as equal, per quantity."""

    accuracy: float = 1e-6
    cka: float = 1e-6
    pc1: float = 1e-6
    block_score: float = 1e-6

    def of(self, quantity: str) -> float:
        return getattr(self, quantity.removesuffix("_pc_removed"))


@dataclass
class Row:
    run: str  # name, or a claim's scope
    seed: int | None
    quantity: str
    a: Any
    b: Any
    max_diff: float | None
    mean_diff: float | None
    tolerance: float | None
    where: str
    ok: bool


@dataclass
class Comparison:
    rows: list[Row]
    only_a: list[tuple]  # (name, seed, status, run_id)
    only_b: list[tuple]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)


def _open(source: str, stack: ExitStack) -> Engine:
    """A database (path or URL) read-only, or a `bench db export` folder imported into a scratch DuckDB file."""
    from benchsuite.store.engine import check_schema, make_engine, open_store

    if Path(source).is_dir():
        from benchsuite.store.transfer import import_parquet, read_export

        files = read_export(Path(source))  # checked before anything is created
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-compare-"))) / "export.duckdb"
        engine = open_store(str(scratch), create=True)
        import_parquet(engine, files)
    else:
        engine = make_engine(source, read_only=True)
        check_schema(engine)
    stack.callback(engine.dispose)
    return engine


def _read(engine: Engine) -> tuple[dict[str, tuple], dict[str, dict[tuple, float]], dict[tuple, tuple]]:
    """Runs by id, each quantity's values by (run_id, key...), claims by (scope, claim)."""
    with engine.connect() as conn:
        runs = {r[0]: tuple(r[1:]) for r in conn.execute(sa.text("SELECT run_id, name, seed, status FROM runs"))}
        values = {q: {tuple(r[:-1]): r[-1] for r in conn.execute(sa.text(sql))} for q, (sql, _) in QUANTITIES.items()}
        claims = {(r[0], r[1]): (r[2], r[3]) for r in conn.execute(sa.text("SELECT scope, claim, verdict, statistic FROM claims"))}
    return runs, values, claims


def compare(a: str, b: str, tolerances: Tolerances = Tolerances()) -> Comparison:
    with ExitStack() as stack:
        runs_a, values_a, claims_a = _read(_open(a, stack))
        runs_b, values_b, claims_b = _read(_open(b, stack))
    shared = sorted(set(runs_a) & set(runs_b), key=lambda r: (runs_a[r][0], runs_a[r][1], r))
    rows = []
    for run_id in shared:
        name, seed, status = runs_a[run_id]
        if status != runs_b[run_id][2]:
            rows.append(Row(name, seed, "status", status, runs_b[run_id][2], None, None, None, run_id, False))
        for quantity, (_, describe) in QUANTITIES.items():
            row = _quantity(quantity, describe, run_id, values_a[quantity], values_b[quantity], tolerances.of(quantity),
                            {**runs_a, **runs_b})
            if row:
                rows.append(Row(name, seed, *row))
    for key in sorted(set(claims_a) | set(claims_b)):
        va, vb = claims_a.get(key, (None, None))[0], claims_b.get(key, (None, None))[0]
        rows.append(Row(key[0], None, f"claim {key[1]}", va, vb, None, None, None, "verdict", va == vb))
    only = lambda mine, other: [(*mine[r][:3], r) for r in sorted(mine, key=lambda r: (mine[r][0], mine[r][1])) if r not in other]  # noqa: E731
    return Comparison(rows, only(runs_a, runs_b), only(runs_b, runs_a))


def _quantity(quantity, describe, run_id, a: dict[tuple, float], b: dict[tuple, float], tolerance: float, runs):
    """(quantity, a, b, max |diff|, mean |diff|, tolerance, where, ok) over one run's values, or None if neither has any."""
    mine = lambda values: {k[1:]: v for k, v in values.items() if k[0] == run_id}  # noqa: E731
    va, vb = mine(a), mine(b)
    if not va and not vb:
        return None
    missing = set(va) ^ set(vb)
    if missing:
        key = sorted(missing)[0]
        side = "B" if key in va else "A"
        return (quantity, len(va), len(vb), None, None, tolerance,
                f"{len(missing)} values on one side only, e.g. {_where(describe, key, runs, run_id)} missing in {side}", False)
    diffs = defaultdict(float)
    for k in va:
        if va[k] is None or vb[k] is None:
            diffs[k] = 0.0 if va[k] is vb[k] else float("inf")
        else:
            diffs[k] = abs(va[k] - vb[k])
    worst = max(diffs, key=lambda k: (diffs[k], k))
    mean = sum(diffs.values()) / len(diffs)
    return (quantity, va[worst], vb[worst], diffs[worst], mean, tolerance, _where(describe, worst, runs, run_id),
            diffs[worst] <= tolerance)


def _where(describe, key: tuple, runs: dict, run_id: str) -> str:
    text = describe(key)
    other = key[1] if len(key) > 4 else None  # cross-model CKA: the second run
    if other is not None and other != run_id:
        name, seed, _ = runs.get(other, (other, "?", None))
        text += f" with {name} seed {seed}"
    return text
