"""Family analyses: measurements over several runs (cross-model CKA, error patterns), run by the
driver once the runs they read are complete.

`@family_analysis("kind")` registers `fn(ctx, options) -> {table: rows}`. Each declared analysis
reads every complete run of the spec; its id hashes (kind, options, those run ids), so it is
computed once and again only when the set of runs changes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
import torch
from rich.markup import escape
from sqlalchemy.engine import Engine

from benchsuite.measure import measure_models
from benchsuite.models import probe_points
from benchsuite.errors import RunFailed
from benchsuite.registry import Registry
from benchsuite.runner.analyses import analysis_id, check_finite, cka_rows, measure_id, similarity_rows
from benchsuite.runner.jobs import Job, build_model, describe_error
from benchsuite.runner.plan import Plan
from benchsuite.spec.load import canonical_json, config_key, name_matches
from benchsuite.store.writer import AnalysisRows, complete_analyses, run_statuses, write_analyses
from benchsuite.train import PreparedData, prepare_data, select_device
from benchsuite.train.loop import CorruptCheckpoint, load_checkpoint

_FAMILY = Registry()  # kind -> fn(ctx: FamilyContext, options) -> {table: rows}
family_analysis = _FAMILY.register


def family_kinds() -> set[str]:
    return set(_FAMILY)


@dataclass
class FamilyContext:
    runs: list[Job]  # the spec's complete runs, in grid order
    engine: Engine
    device: torch.device
    _data: dict[str, PreparedData] = field(default_factory=dict, repr=False)

    def data(self, job: Job) -> PreparedData:
        key = canonical_json(job.config.dataset)
        if key not in self._data:
            self._data[key] = prepare_data(job.config.dataset, job.data_dir, eval_batch_size=job.measure.batch_size)
        return self._data[key]

    def load_model(self, job: Job, checkpoint: Path | None = None) -> torch.nn.Module:
        """The run's trained model (or the model state of another checkpoint file), in eval mode."""
        model = build_model(job, self.data(job))
        path = checkpoint or job.checkpoint
        try:
            state = load_checkpoint(path)["model"]
            model.load_state_dict(state)
        except (CorruptCheckpoint, RuntimeError) as exc:  # RuntimeError: the state of another architecture
            reason = exc.reason if isinstance(exc, CorruptCheckpoint) else "not this run's architecture"
            raise RunFailed(f"{job.name} seed={job.config.seed}: {path} cannot be loaded ({reason}); restore it "
                            "from a copy, or retrain the run into a new --db and --artifacts") from None
        if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
            raise RunFailed(f"{job.name} seed={job.config.seed}: {path} holds non-finite weights; the run diverged "
                            "and is not evidence")
        return model.to(self.device).eval()

    def measure(self, models: list[torch.nn.Module], jobs: list[Job], similarity: bool = False, **kw):
        """One pass over the shared evaluation set for several models; `similarity` adds the heatmaps of
        the spec's similarity measures."""
        points = [probe_points(m, j.measure.probes) for m, j in zip(models, jobs)]
        if similarity:
            kw.update(similarity=jobs[0].measure.similarity, similarity_examples=jobs[0].measure.similarity_examples)
        loader = self.data(jobs[0]).eval_loader(self.device, jobs[0].measure.examples)
        return measure_models(models, points, loader, **kw)


@dataclass
class PlannedFamilyAnalysis:
    analysis_id: str
    kind: str
    options: dict
    runs: list[Job]


def plan_family(plan: Plan, engine: Engine) -> list[PlannedFamilyAnalysis]:
    statuses, done = run_statuses(engine), complete_analyses(engine)
    runs = [j for j in plan.jobs if statuses.get(j.run_id) == "complete"]
    measure = plan.spec.measure.analysis_key()
    out = []
    for a in plan.spec.analyses:
        if a.kind not in _FAMILY or not runs:
            continue
        aid = analysis_id(a.kind, a.options, [j.run_id for j in runs], measure)
        if aid not in done:
            out.append(PlannedFamilyAnalysis(aid, a.kind, a.options, runs))
    return out


def run_family_analyses(plan: Plan, engine: Engine, console=None, device: str = "auto") -> dict[str, int]:
    """Compute and store every family analysis the database lacks; a failure is stored, not raised."""
    counts = {"complete": 0, "failed": 0}
    for p in plan_family(plan, engine):
        ctx = FamilyContext(p.runs, engine, select_device(device))
        result = AnalysisRows(p.analysis_id, p.kind, [j.run_id for j in p.runs], p.options,
                              measure_id=measure_id(plan.spec.measure.identity()))
        try:
            result.rows = _FAMILY[p.kind](ctx, p.options)
            check_finite(result.rows, f"{p.kind} over {len(p.runs)} runs")
        except Exception as exc:
            result.status, result.error = "failed", describe_error(exc)
        write_analyses(engine, [result])
        counts[result.status] += 1
        if console is not None:
            what = f"{p.kind} over {len(p.runs)} runs"
            console.print(f"[green]done[/] {what}" if result.status == "complete"
                          else f"[red]failed[/] {what}: {escape(result.error)}")
    return counts


def _eval_key(job: Job) -> str:
    """Runs can share a CKA pass only if they see the same evaluation batches."""
    return canonical_json({"dataset": job.config.dataset.name, "eval_size": job.config.dataset.eval_size,
                           "batch": job.measure.batch_size, "probes": job.measure.probes,
                           "examples": job.measure.examples})


# Seeds: the whole configuration but the seed; architectures: one seed, data and recipe, any family/params.
_ACROSS = {"seeds": lambda j: (config_key(j.config), _eval_key(j)),
           "architectures": lambda j: (config_key(j.config, ("family", "params")), _eval_key(j)),
           "all": _eval_key}


def seed_groups(runs: list[Job], across: str = "seeds") -> list[list[Job]]:
    """Runs that may be compared: the seeds of one configuration (or `architectures`, `all`), in run order
    within a group; each group sees the same evaluation batches."""
    key = _ACROSS[across]
    return [list(g) for _, g in itertools.groupby(sorted(runs, key=lambda j: str(key(j))), key=lambda j: str(key(j)))]


@family_analysis("cross_cka")
def _cross_cka(ctx: FamilyContext, options: dict) -> dict[str, list[dict]]:
    pairs = options.get("pairs")
    rows, similar = [], []
    for group in seed_groups(ctx.runs, options.get("across", "seeds")):
        if len(group) < 2:
            continue

        def wanted(a: int, b: int) -> bool:
            if a == b:
                return False
            if pairs is None:
                return True
            na, nb = group[a].name, group[b].name
            return any(name_matches(na, ga) and name_matches(nb, gb) or name_matches(na, gb) and name_matches(nb, ga)
                       for ga, gb in pairs)

        if not any(wanted(a, b) for a in range(len(group)) for b in range(len(group))):
            continue
        m = ctx.measure([ctx.load_model(j) for j in group], group, similarity=True, pcs=False)
        models = [(j.run_id, j.config.train.epochs) for j in group]
        rows += cka_rows(m.cka, models, m.offsets, pair_filter=wanted)
        similar += similarity_rows(m, group[0].measure.similarity, models, pair_filter=wanted)
    return {"cka": rows, "similarity": similar}


@family_analysis("training_cka")
def _training_cka(ctx: FamilyContext, options: dict) -> dict[str, list[dict]]:
    rows = []
    for job in ctx.runs:
        final = job.config.train.epochs
        epochs = sorted({e for e in options["epochs"] if 0 < e < final})
        missing = [e for e in epochs if not job.epoch_checkpoint(e).exists()]
        if missing:
            raise FileNotFoundError(f"{job.name} seed={job.config.seed} kept no checkpoint of epochs {missing}; "
                                    f"delete its run folder {job.checkpoint.parent} and run again to retrain")
        models = [ctx.load_model(job, job.epoch_checkpoint(e)) for e in epochs] + [ctx.load_model(job)]
        m = ctx.measure(models, [job] * len(models), pcs=False)
        keys = [(job.run_id, e) for e in epochs + [final]]
        rows += cka_rows(m.cka, keys, m.offsets, pair_filter=lambda a, b: a != b)
    return {"cka": rows}


# Family kinds defined elsewhere register themselves on import (below the registry they use).
from benchsuite.analyses import agreement, errors  # noqa: E402,F401
