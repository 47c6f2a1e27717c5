"""The cost of every similarity measure relative to linear CKA, on the quickstart family, and peers.

Trains (or reuses) the runs of a spec (default specs/quickstart.yaml: ResNet-8/20/56 x 2 seeds on
digits, 500 evaluation examples), captures every probe point of every model on the evaluation set
once, and then times, from those same features:
- the baseline: linear CKA's minibatch estimator (MinibatchCKA over the evaluation batches), every
  within- and cross-model heatmap of the family at once;
- each registered measure's family form (FullBatchSimilarity with that one measure, all examples),
  the same heatmaps; the ratio to the baseline is the column to read;
- peers where one installs here, on the within-model heatmap of one model (`--peer-run`, default
  the depth-20 model of seed 0): rsatoolbox (RSA: calc_rdm euclidean + compare spearman / corr),
  scipy.spatial.procrustes (its disparity is 1 - ||X^T Y||_*^2, so ours converts as
  1 - (1 - d / 2)^2), scikit-learn NearestNeighbors (mutual kNN, cosine, brute force), each against
  ours on the same probe points, for time and the largest difference of values.
  netrep, ReSi and the platonic-representation code are not on PyPI, so they are not compared.

Times are the fastest of `--repeat` runs (wall clock and CPU time, the steadier on a shared machine), peak memory the growth
of peak RSS (/proc/self/status VmHWM, reset before each measure), on `--threads` torch threads.

    python benchmarks/measures.py [--spec specs/quickstart.yaml] [--repeat 3] [--json out.json] [--figure out.svg]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from cka_vs_peers import _status_kib  # noqa: E402

from benchsuite.measure import FeatureCapture, FullBatchSimilarity, MeasureChoice, MinibatchCKA, list_measures  # noqa: E402
from benchsuite.models import probe_points  # noqa: E402
from benchsuite.runner import make_plan  # noqa: E402
from benchsuite.runner.family import FamilyContext  # noqa: E402
from benchsuite.spec import load_spec  # noqa: E402
from benchsuite.store import open_store  # noqa: E402

CHOICES = ["linear_cka", {"name": "linear_cka", "estimator": "full"}, "rbf_cka", "cca", "svcca", "pwcca", "procrustes",
           "mutual_knn", "rsa", {"name": "rsa", "method": "spearman"}]


def features(spec_path: str, db: str, artifacts: str):
    """Train what the database lacks, then every probe point's features, batch by batch, of every run."""
    subprocess.run([sys.executable, "-m", "benchsuite", "run", spec_path, "--db", db, "--artifacts", artifacts],
                   check=True)
    plan = make_plan(load_spec(spec_path), "bench", None, artifacts=artifacts)
    ctx = FamilyContext(plan.jobs, open_store(db), torch.device("cpu"))
    models = [ctx.load_model(j) for j in plan.jobs]
    points = [probe_points(m, j.measure.probes) for m, j in zip(models, plan.jobs)]
    batches = []
    with torch.inference_mode():
        t0 = time.perf_counter()
        for xb, _ in ctx.data(plan.jobs[0]).eval_loader("cpu").epoch():
            feats = []
            for model, pts in zip(models, points):
                with FeatureCapture(model, pts) as cap:
                    model(xb)
                    feats += [f.flatten(1) for f in cap.features]
            batches.append(feats)
        forward = time.perf_counter() - t0
    return plan.jobs, [len(p) for p in points], batches, forward


def timed(fn, repeat: int) -> tuple[float, float, float, object]:
    """(fastest wall s, its CPU s, peak RSS growth MiB, result)."""
    best = None
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    rss0 = _status_kib("VmRSS")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if best is None or wall < best[0]:
            best = (wall, cpu)
    return best[0], best[1], (_status_kib("VmHWM") - rss0) / 1024, out


def family_form(choice: MeasureChoice, batches):
    if choice.streaming:
        acc = MinibatchCKA()
        for feats in batches:
            acc.update(feats)
        return acc.compute().numpy()
    acc = FullBatchSimilarity([choice])
    for feats in batches:
        acc.update(feats)
    return acc.compute()[choice.label]


def peers(xs: list[np.ndarray], k: int, repeat: int) -> list[dict]:
    """Each installed peer against ours on the within-model heatmap of the probe points `xs`."""
    out = []
    tensors = [torch.from_numpy(x) for x in xs]

    def mine(choice):
        return lambda: family_form(MeasureChoice.model_validate(choice), [tensors])

    try:
        import rsatoolbox

        def rsa_peer(method):
            def run():
                rdms = rsatoolbox.rdm.calc_rdm([rsatoolbox.data.Dataset(x.astype(np.float64)) for x in xs], method="euclidean")
                return rsatoolbox.rdm.compare(rdms, rdms, method=method)
            return run
        for method, peer_method in (("pearson", "corr"), ("spearman", "spearman")):
            out.append(("rsatoolbox", f"rsa[method={method}]", rsa_peer(peer_method), mine({"name": "rsa", "method": method}),
                        lambda v: v))
    except ImportError:
        print("rsatoolbox is not installed: pip install rsatoolbox", file=sys.stderr)
    from scipy.spatial import procrustes as scipy_procrustes

    def scipy_run():
        p = len(xs)
        m = np.zeros((p, p))
        for i in range(p):
            for j in range(i, p):
                d = max(xs[i].shape[1], xs[j].shape[1])
                a, b = (np.pad(x.astype(np.float64), ((0, 0), (0, d - x.shape[1]))) for x in (xs[i], xs[j]))
                m[i, j] = m[j, i] = scipy_procrustes(a, b)[2]
        return m
    out.append(("scipy.spatial.procrustes", "procrustes", scipy_run, mine("procrustes"), lambda d: 1 - (1 - d / 2) ** 2))
    try:
        from sklearn.neighbors import NearestNeighbors

        def sklearn_run():
            idx = [NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(x).kneighbors(x)[1][:, 1:]
                   for x in xs]
            sets = [[set(r) for r in i] for i in idx]
            return np.array([[np.mean([len(a & b) / k for a, b in zip(sa, sb)]) for sb in sets] for sa in sets])
        out.append(("scikit-learn NearestNeighbors", "mutual_knn", sklearn_run, mine("mutual_knn"), lambda v: v))
    except ImportError:
        print("scikit-learn is not installed", file=sys.stderr)
    rows = []
    for peer, label, run_peer, run_ours, convert in out:
        pw, pc, _, pv = timed(run_peer, repeat)
        ow, oc, _, ov = timed(run_ours, repeat)
        rows.append(dict(peer=peer, measure=label, peer_s=pw, peer_cpu_s=pc, ours_s=ow, ours_cpu_s=oc,
                         max_diff=float(np.abs(convert(np.asarray(ov)) - np.asarray(pv)).max())))
    return rows


def figure(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot()
    ax.barh([r["measure"] for r in rows][::-1], [r["cpu_ratio"] for r in rows][::-1], color="#4a6fa5")
    ax.axvline(1, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("CPU time relative to linear CKA (minibatch), same run")
    ax.set_title("Similarity measures on the quickstart family (every heatmap)")
    for i, r in enumerate(rows[::-1]):
        ax.text(r["cpu_ratio"], i, f" {r['cpu_ratio']:.1f}x", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="specs/quickstart.yaml")
    parser.add_argument("--db", default="bench_measures.duckdb")
    parser.add_argument("--artifacts", default="bench_artifacts")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--peer-run", type=int, default=2, help="index of the run whose within-model heatmap peers compute")
    parser.add_argument("--json")
    parser.add_argument("--figure")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    jobs, sizes, batches, forward = features(args.spec, args.db, args.artifacts)
    n = sum(b[0].shape[0] for b in batches)
    print(f"{len(jobs)} runs, {sum(sizes)} probe points, {n} evaluation examples; forward passes {forward:.2f} s")
    choices = [MeasureChoice.model_validate(c) for c in CHOICES]
    assert {c.name for c in choices} == set(list_measures())
    rows = []
    for c in choices:
        wall, cpu, mib, _ = timed(lambda: family_form(c, batches), args.repeat)
        rows.append(dict(measure=c.label, wall_s=wall, cpu_s=cpu, peak_mib=mib))
    for r in rows:  # CPU time is the steadier ratio on a shared machine
        r["ratio"], r["cpu_ratio"] = r["wall_s"] / rows[0]["wall_s"], r["cpu_s"] / rows[0]["cpu_s"]
    print(f"\n{'measure':28} {'wall s':>8} {'cpu s':>8} {'x CKA wall':>11} {'x CKA cpu':>10} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['measure']:28} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {r['ratio']:11.1f} {r['cpu_ratio']:10.1f} "
              f"{r['peak_mib']:9.0f}")

    start = sum(sizes[:args.peer_run])
    xs = [torch.cat([b[start + i] for b in batches]).numpy() for i in range(sizes[args.peer_run])]
    print(f"\npeers on {jobs[args.peer_run].name} seed {jobs[args.peer_run].config.seed} ({len(xs)} probe points, within-model)")
    peer_rows = peers(xs, k=10, repeat=args.repeat)
    print(f"{'peer':30} {'measure':22} {'peer s':>8} {'ours s':>8} {'speed-up':>9} {'max |diff|':>11}")
    for r in peer_rows:
        print(f"{r['peer']:30} {r['measure']:22} {r['peer_s']:8.2f} {r['ours_s']:8.2f} {r['peer_s'] / r['ours_s']:9.1f} "
              f"{r['max_diff']:11.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps({"examples": n, "probe_points": sum(sizes), "forward_s": forward,
                                               "measures": rows, "peers": peer_rows}, indent=2))
    if args.figure:
        figure(rows, args.figure)


if __name__ == "__main__":
    main()
