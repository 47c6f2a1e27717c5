"""What the leaderboard shows, read from the results database into plain Python objects.

Every collection comes out in a fixed order, so the same database always gives the same site.
When several analyses measured the same run, the most recent one wins, with the probe points
(`layers` rows) of the measurement setting its heatmap was measured with.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import numpy as np
import sqlalchemy as sa

from benchsuite.errors import BenchError
from benchsuite.report.claims import ClaimResult
from benchsuite.store import tables as t

# Index grid axes (rows, columns) per family; other families use their two most varied parameters.
GRID_AXES = {"cifar_resnet": ("depth", "width")}


@dataclass
class Layer:
    name: str
    stage: int | None


@dataclass(eq=False)
class Run:
    row: dict[str, Any]  # the runs row, params parsed
    accuracy: float | None = None  # eval_acc at the last epoch
    layers: list[Layer] = field(default_factory=list)
    cka: np.ndarray | None = None  # within-model heatmap, final checkpoint
    cka_pc_removed: np.ndarray | None = None
    pc1: np.ndarray | None = None  # PC1 variance fraction per layer
    pc_cosines: np.ndarray | None = None
    block_score: dict | None = None  # the block_scores row
    blocks: list[dict] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)
    ablations: list[dict] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:  # run.name, run.seed, ...: the runs columns
        try:
            return self.__dict__["row"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def max_pc1(self) -> float | None:
        return None if self.pc1 is None or not np.isfinite(self.pc1).any() else float(np.nanmax(self.pc1))


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


@dataclass
class Group:
    """The runs of one architecture on one dataset and training-set size: its seeds."""

    name: str
    family: str
    params: dict[str, Any]
    dataset: str
    train_size: float | None
    runs: list[Run]
    slug: str

    @property
    def complete(self) -> list[Run]:
        return [r for r in self.runs if r.complete]

    @property
    def train_examples(self) -> int | None:
        return next((r.train_examples for r in self.runs if r.train_examples is not None), None)

    @property
    def accuracies(self) -> list[float]:
        return [r.accuracy for r in self.complete if r.accuracy is not None]

    @property
    def accuracy(self) -> float | None:
        return _mean(self.accuracies)

    @property
    def accuracy_sd(self) -> float | None:
        acc = self.accuracies
        return statistics.stdev(acc) if len(acc) > 1 else None

    @property
    def num_params(self) -> int | None:
        return next((r.num_params for r in self.complete if r.num_params is not None), None)

    @property
    def block_score(self) -> float | None:
        return _mean([r.block_score["score"] for r in self.complete if r.block_score])

    @property
    def block_size(self) -> float | None:
        return _mean([r.block_score["largest_fraction"] for r in self.complete if r.block_score])

    @property
    def max_pc1(self) -> float | None:
        return _mean([r.max_pc1 for r in self.complete if r.max_pc1 is not None])


@dataclass
class CrossPair:
    """CKA between the layers of two different runs (rows: a's layers, columns: b's)."""

    a: Run
    b: Run
    cka: np.ndarray


@dataclass
class ErrorAnalysis:
    analysis_id: str
    kind: str
    options: dict[str, Any]
    runs: list[Run]
    classes: list[dict]
    agreement: list[dict]  # rows with run_a / run_b replaced by Run objects


@dataclass
class MeasureAgreement:
    """A measure_agreement analysis: heatmaps of one run under every measure, and the agreement tables."""

    analysis_id: str
    runs: list[Run]
    run: Run  # the run whose heatmaps are shown: the analysis's first in site order
    heatmaps: list[tuple[str, np.ndarray]]  # (measure label, within-model heatmap read as a similarity)
    correspondence: list[dict]  # per measure: pairs of seeds, mean/min/max accuracy
    blocks: list[dict]  # per measure: runs with a block, mean fraction of depth inside blocks
    overlap: list[dict]  # per pair of measures: mean layers_agree and jaccard over runs
    rank: list[dict]  # the measure_rank_agreement rows


@dataclass
class SiteData:
    specs: dict[str, dict] = field(default_factory=dict)  # spec_hash -> specs row
    runs: list[Run] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    cross: list[CrossPair] = field(default_factory=list)
    errors: list[ErrorAnalysis] = field(default_factory=list)
    claims: dict[str, list[ClaimResult]] = field(default_factory=dict)  # by scope, "all" first (bench claims)
    agreements: list[MeasureAgreement] = field(default_factory=list)


def value_key(v: Any) -> tuple:
    """Numbers sort numerically and before everything else, which sorts by its JSON text."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, v, "")
    return (1, 0, json.dumps(v, sort_keys=True))


def _params_key(params: dict) -> tuple:
    return tuple((k, value_key(v)) for k, v in sorted(params.items()))


def _size_key(size: float | None) -> tuple:
    return (size is not None, size or 0.0)


def group_key(g: Group | Run) -> tuple:
    return (g.family, g.dataset, _size_key(g.train_size), _params_key(g.params), g.name)


def slug(*parts: Any) -> str:
    """A file name: readable, and unique through a hash of the full text."""
    text = "\x1f".join(map(str, parts))
    readable = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def grid_axes(family: str, groups: list[Group]) -> list[str]:
    """The parameters spanning a family's grid on the index: none, one (a list) or two."""
    preferred = GRID_AXES.get(family)
    if preferred and all(all(p in g.params for p in preferred) for g in groups):
        return list(preferred)
    values = defaultdict(set)
    for g in groups:
        for k, v in g.params.items():
            values[k].add(json.dumps(v, sort_keys=True))
    varying = sorted((k for k, vs in values.items() if len(vs) > 1), key=lambda k: (-len(values[k]), k))
    return varying[:2]


def load_site_data(db: str | None = None) -> SiteData:
    """Everything the site shows; an empty SiteData when there is no database or it holds no schema."""
    from benchsuite.store.engine import check_schema, current_revision, database_exists, make_engine

    if not database_exists(db):
        return SiteData()
    engine = make_engine(db, read_only=True)
    try:
        if current_revision(engine) is None:
            return SiteData()
        check_schema(engine)
        with engine.connect() as conn:
            return _read(conn)
    except sa.exc.DBAPIError as exc:
        raise BenchError(f"cannot read the results database: {str(exc.orig).splitlines()[0]}") from None
    finally:
        engine.dispose()


def _all(conn, table: sa.Table, *where) -> list[dict]:
    query = sa.select(table).where(*where).order_by(*table.primary_key.columns)
    return [dict(r) for r in conn.execute(query).mappings()]


def _latest(rows: list[dict], key: Callable[[dict], Hashable], rank: Callable[[dict], tuple]) -> dict[Hashable, list[dict]]:
    """Rows grouped by `key`, keeping in each group only the rows of the highest `rank`."""
    best: dict[Hashable, tuple[tuple, list[dict]]] = {}
    for r in rows:
        k, rk = key(r), rank(r)
        if k not in best or rk > best[k][0]:
            best[k] = (rk, [r])
        elif rk == best[k][0]:
            best[k][1].append(r)
    return {k: v for k, (_, v) in best.items()}


def _matrix(rows: list[dict], a: str = "layer_a", b: str = "layer_b") -> np.ndarray:
    out = np.full((max(r[a] for r in rows) + 1, max(r[b] for r in rows) + 1), np.nan)
    for r in rows:
        if r["value"] is not None:
            out[r[a], r[b]] = r["value"]
    return out


def per_layer(rows: list[dict], column: str) -> np.ndarray:
    """`column` of rows keyed by `layer`, as a vector over probe points (NaN where a layer has no row)."""
    out = np.full(max(r["layer"] for r in rows) + 1, np.nan)
    for r in rows:
        if r[column] is not None:
            out[r["layer"]] = r[column]
    return out


def _read(conn) -> SiteData:
    analyses = {a["analysis_id"]: a for a in _all(conn, t.analyses)}

    def recency(row: dict) -> tuple:
        created = analyses.get(row["analysis_id"], {}).get("created_at")
        return (created.isoformat() if created else "", row["analysis_id"])

    runs = {}
    for row in _all(conn, t.runs):
        row["params"] = json.loads(row["params"])
        runs[row["run_id"]] = Run(row)
    by_run = lambda r: r["run_id"]  # noqa: E731

    for run_id, rows in _latest(_all(conn, t.metrics, t.metrics.c.name == "eval_acc"), by_run,
                                lambda r: (r["epoch"],)).items():
        if run_id in runs:
            runs[run_id].accuracy = rows[0]["value"]
    settings: dict[str, dict[str, list[Layer]]] = defaultdict(dict)  # run -> measure_id -> probe points
    for row in sorted(_all(conn, t.layers), key=lambda r: (r["run_id"], r["measure_id"], r["layer"])):
        settings[row["run_id"]].setdefault(row["measure_id"], []).append(Layer(row["name"], row["stage"]))

    cka = _all(conn, t.cka)
    within = [r for r in cka if r["run_a"] == r["run_b"] and r["epoch_a"] == r["epoch_b"]]
    heatmaps = _latest(within, lambda r: (r["run_a"], r["pc_removed"]), lambda r: (r["epoch_a"], *recency(r)))
    for (run_id, removed), rows in heatmaps.items():
        if run_id in runs:
            setattr(runs[run_id], "cka_pc_removed" if removed else "cka", _matrix(rows))
    for run_id, by_setting in settings.items():
        # The probe points of the setting the shown heatmap was measured with (else the run's only one).
        shown = heatmaps.get((run_id, False))
        mid = analyses.get(shown[0]["analysis_id"], {}).get("measure_id") if shown else None
        if run_id in runs:
            runs[run_id].layers = by_setting.get(mid) or by_setting[min(by_setting)]
    cosines = [r for r in _all(conn, t.pc_cosines) if r["run_a"] == r["run_b"]]
    for run_id, rows in _latest(cosines, lambda r: r["run_a"], recency).items():
        if run_id in runs:
            runs[run_id].pc_cosines = _matrix(rows)
    for table, attr, convert in ((t.pcs, "pc1", lambda rows: per_layer(rows, "pc1_fraction")),
                                 (t.block_scores, "block_score", lambda rows: rows[0]),
                                 (t.blocks, "blocks", list), (t.probes, "probes", list), (t.ablations, "ablations", list)):
        for run_id, rows in _latest(_all(conn, table), by_run, recency).items():
            if run_id in runs:
                setattr(runs[run_id], attr, convert(rows))

    ordered = sorted(runs.values(), key=lambda r: (*group_key(r), r.seed, r.run_id))
    return SiteData(
        specs={s["spec_hash"]: s for s in _all(conn, t.specs)},
        runs=ordered,
        groups=_groups(ordered),
        cross=_cross([r for r in cka if r["run_a"] != r["run_b"] and not r["pc_removed"]], ordered, recency),
        errors=_errors(conn, analyses, ordered),
        claims=_claims(conn),
        agreements=_agreements(conn, analyses, ordered),
    )


def _groups(runs: list[Run]) -> list[Group]:
    members: dict[tuple, list[Run]] = defaultdict(list)
    for r in runs:  # sorted, so groups and their seeds come out sorted
        members[(r.name, r.dataset, r.train_size)].append(r)
    return [Group(name, rs[0].family, rs[0].params, dataset, size, rs, slug(name, dataset, "all" if size is None else f"{size:g}"))
            for (name, dataset, size), rs in members.items()]


def _cross(rows: list[dict], ordered: list[Run], recency) -> list[CrossPair]:
    """One heatmap per unordered pair of runs, oriented so that `a` comes first in `ordered`."""
    runs = {r.run_id: r for r in ordered}
    order = {r.run_id: i for i, r in enumerate(ordered)}
    pairs = {}
    for (a, b), rs in sorted(_latest(rows, lambda r: (r["run_a"], r["run_b"]), recency).items()):
        if a not in runs or b not in runs:
            continue
        m = _matrix(rs)
        if order[a] > order[b]:
            a, b, m = b, a, m.T
        pairs.setdefault((a, b), m)  # a pair stored both ways: either orientation is the same heatmap
    return [CrossPair(runs[a], runs[b], m) for (a, b), m in sorted(pairs.items(), key=lambda kv: (order[kv[0][0]], order[kv[0][1]]))]


def _errors(conn, analyses: dict[str, dict], ordered: list[Run]) -> list[ErrorAnalysis]:
    runs = {r.run_id: r for r in ordered}
    classes, agreement = defaultdict(list), defaultdict(list)
    for row in _all(conn, t.error_classes):
        classes[row["analysis_id"]].append(row)
    for row in _all(conn, t.error_agreement):
        if row["run_a"] in runs and row["run_b"] in runs:
            agreement[row["analysis_id"]].append({**row, "run_a": runs[row["run_a"]], "run_b": runs[row["run_b"]]})
    out = []
    for aid in sorted(set(classes) | set(agreement)):
        a = analyses.get(aid, {})
        run_ids = set(json.loads(a.get("run_ids") or "[]"))
        out.append(ErrorAnalysis(aid, a.get("kind", "errors"), json.loads(a.get("options") or "{}"),
                                 [r for r in ordered if r.run_id in run_ids], classes[aid], agreement[aid]))
    return out


def _claims(conn) -> dict[str, list[ClaimResult]]:
    """The stored verdicts of `bench claims`, each rebuilt as the ClaimResult it was stored from."""
    by_scope: dict[str, list[ClaimResult]] = defaultdict(list)
    for row in _all(conn, t.claims):
        evidence = json.loads(row["evidence"] or "{}")
        by_scope[row["scope"]].append(ClaimResult(
            row["claim"], row["title"] or "", row["statistic"], row["uncertainty"], row["verdict"] or "", row["meaning"] or "",
            evidence.get("columns", []), evidence.get("rows", []), row["note"] or "", evidence.get("figure", {}),
            evidence.get("runs", [])))
    return dict(sorted(by_scope.items(), key=lambda kv: (kv[0] != "all", kv[0])))


def _by(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        out[tuple(r[k] for k in keys)].append(r)
    return out


def _agreements(conn, analyses: dict[str, dict], ordered: list[Run]) -> list[MeasureAgreement]:
    from benchsuite.measure.similarity import MeasureChoice

    out = []
    for aid, a in sorted(analyses.items()):
        if a["kind"] != "measure_agreement" or a["status"] != "complete":
            continue
        ids = set(json.loads(a["run_ids"]))
        runs = [r for r in ordered if r.run_id in ids]
        if not runs:
            continue
        shown = runs[0]
        cells = _all(conn, t.similarity, t.similarity.c.analysis_id == aid, t.similarity.c.run_a == shown.run_id,
                     t.similarity.c.run_b == shown.run_id)
        heatmaps = []
        for (name, options), rows in _by(cells, "measure", "options").items():
            choice = MeasureChoice(name=name, options=json.loads(options))
            heatmaps.append((choice.label, choice.measure.as_similarity(_matrix(rows))))
        where = lambda table: (table.c.analysis_id == aid,)  # noqa: E731
        correspondence = [dict(measure=m, pairs=len(rs), accuracy=_mean([r["accuracy"] for r in rs]),
                               low=min(r["accuracy"] for r in rs), high=max(r["accuracy"] for r in rs))
                          for (m,), rs in _by(_all(conn, t.measure_correspondence, *where(t.measure_correspondence)),
                                              "measure").items()]
        labels = [h[0] for h in heatmaps]
        found = _by(_all(conn, t.measure_blocks, *where(t.measure_blocks)), "measure", "run_id")
        blocks = [dict(measure=m, runs=len(runs), with_block=sum((m, r.run_id) in found for r in runs),
                       fraction=_mean([sum(b["size_fraction"] for b in found.get((m, r.run_id), [])) for r in runs]))
                  for m in labels]
        overlap = [dict(measure_a=ma, measure_b=mb, layers_agree=_mean([r["layers_agree"] for r in rs]),
                        jaccard=_mean([r["jaccard"] for r in rs if r["jaccard"] is not None]))
                   for (ma, mb), rs in _by(_all(conn, t.measure_block_overlap, *where(t.measure_block_overlap)),
                                           "measure_a", "measure_b").items()]
        rank = _all(conn, t.measure_rank_agreement, *where(t.measure_rank_agreement))
        out.append(MeasureAgreement(aid, runs, shown, heatmaps, correspondence, blocks, overlap, rank))
    return out
