"""Do the similarity measures agree about a family's structure? (family kind `measure_agreement`)

Over the measures a spec chooses (`measure.similarity`), from one pass over the evaluation set per
group of seeds (runs whose whole configuration but the seed is equal):

- layer correspondence (Kornblith et al. 2019, sec. 6.1): for each probe point of one seed, is the
  most similar probe point of another seed the same one? The fraction that is, per measure and
  ordered pair of seeds (table measure_correspondence);
- block structure under each measure: the block detector on the measure's within-model heatmap
  (as a similarity, symmetrised) and the PC1 fractions (measure_blocks), and how far two measures
  agree on which probe points lie inside blocks (measure_block_overlap);
- rank agreement: Spearman correlation between two measures over every heatmap cell of the
  analysis, within and across seeds, diagonals excluded (measure_rank_agreement).

Measures are named by their label, `name` or `name[k=v,...]` with the options that differ from
the defaults. Distances (Procrustes) are read as similarities (1 - d / 2) throughout.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.stats import spearmanr

from benchsuite.analyses.options import AgreementOptions
from benchsuite.measure.blocks import detect_blocks
from benchsuite.runner.analyses import similarity_rows
from benchsuite.runner.family import FamilyContext, family_analysis, seed_groups


def corresponding_layers(s: np.ndarray) -> int:
    """How many rows of a (L, L) cross-seed similarity matrix have their maximum on the diagonal."""
    return int((np.argmax(s, axis=1) == np.arange(s.shape[0])).sum())


def inside_blocks(blocks, layers: int) -> np.ndarray:
    inside = np.zeros(layers, dtype=bool)
    for b in blocks:
        inside[b.start:b.end + 1] = True
    return inside


def block_overlap(a: np.ndarray, b: np.ndarray) -> tuple[float, float | None]:
    """Fraction of probe points both call inside or both outside a block; Jaccard of the inside sets
    (None when neither has a block)."""
    union = (a | b).sum()
    return float((a == b).mean()), (float((a & b).sum() / union) if union else None)


@family_analysis("measure_agreement")
def _measure_agreement(ctx: FamilyContext, options: dict) -> dict[str, list[dict]]:
    opts = AgreementOptions(**options)
    choices = ctx.runs[0].measure.similarity
    labels = [c.label for c in choices]
    out = {k: [] for k in ("similarity", "measure_correspondence", "measure_blocks", "measure_block_overlap",
                           "measure_rank_agreement")}
    cells: dict[str, list[np.ndarray]] = {label: [] for label in labels}
    for group in seed_groups(ctx.runs):
        m = ctx.measure([ctx.load_model(j) for j in group], group, similarity=True)
        out["similarity"] += similarity_rows(m, choices, [(j.run_id, j.config.train.epochs) for j in group])
        spans = [slice(m.offsets[i], m.offsets[i + 1]) for i in range(len(group))]
        inside = {}
        for c in choices:
            s = c.measure.as_similarity(m.similarity[c.label])
            cells[c.label].append(s[~np.eye(len(s), dtype=bool)])
            for a, b in itertools.permutations(range(len(group)), 2):
                layers = spans[a].stop - spans[a].start
                correct = corresponding_layers(s[spans[a], spans[b]])
                out["measure_correspondence"].append(dict(measure=c.label, run_a=group[a].run_id, run_b=group[b].run_id,
                                                          layers=layers, correct=correct, accuracy=correct / layers))
            for job, span in zip(group, spans):
                within = s[span, span]
                found = detect_blocks((within + within.T) / 2, m.pc1_fraction[span], params=opts.detector)
                inside[c.label, job.run_id] = inside_blocks(found, within.shape[0])
                out["measure_blocks"] += [dict(measure=c.label, run_id=job.run_id, block=k, start_layer=b.start,
                                               end_layer=b.end, size_fraction=b.size_fraction, mean_similarity=b.mean_cka,
                                               mean_pc1=b.mean_pc1, score=b.score) for k, b in enumerate(found)]
        for job in group:
            for la, lb in itertools.combinations(labels, 2):
                agree, jaccard = block_overlap(inside[la, job.run_id], inside[lb, job.run_id])
                out["measure_block_overlap"].append(dict(run_id=job.run_id, measure_a=la, measure_b=lb,
                                                         layers_agree=agree, jaccard=jaccard))
    pooled = {label: np.concatenate(v) for label, v in cells.items()}
    for la, lb in itertools.combinations(labels, 2):
        rho = float(spearmanr(pooled[la], pooled[lb])[0]) if len(pooled[la]) > 1 else math.nan
        out["measure_rank_agreement"].append(dict(measure_a=la, measure_b=lb, spearman=rho if math.isfinite(rho) else None,
                                                  cells=int(len(pooled[la]))))
    return out
