"""Minibatch CKA heatmaps: benchsuite against pytorch-cka 1.1.3 and torch-cka 0.21.

Every tool computes the same estimator (Nguyen et al. 2021, eq. 2: per batch, unbiased
HSIC_1 of linear grams; summed over batches; CKA = S_xy / sqrt(S_xx S_yy)) for the probe
points of CIFAR ResNets (stem + every residual block output), on fixed random inputs
(torch.randn, 3x32x32, batch 256) through randomly initialised models in eval mode.

Workloads (`--workload`, repeatable; default all three):
  a  one model, ResNet-56 x1, n = 1024                     benchsuite, pytorch-cka, torch-cka
  b  ResNet-56 x1, ResNet-56 x4, ResNet-110 x1, n = 1000,  benchsuite, pytorch-cka
     every within- and cross-model heatmap                 (+ torch-cka with --with-torch-cka)
  c  ResNet-20/56/110 at widths 1 and 2, n = 1000          benchsuite, pytorch-cka
                                                           (+ torch-cka with --with-torch-cka)
`--quick` swaps in ResNet-20/32 models and n = 300 (one full batch and one of 44) for a
smoke run of a few minutes.

How each tool is run (as its users would):
- benchsuite: measure_models(models, probe points, the DataLoader, pcs=False), the call `bench run`
  makes: one forward pass per model per batch, each probe point's output turned into its U-centred
  gram as it arrives (a batch never holds every activation at once); the grams of all models of the
  family go into one MinibatchCKA, whose (P, P) result is sliced into the model-pair heatmaps. It runs
  each model in its faster equivalent form (benchsuite.measure.form: eval-mode BatchNorms folded into
  their convolutions, convolutions channels-last on a CPU) and gives it back as it was.
- benchsuite as given: the same with as_given=True, the models run as they are given, as the peers
  run them: the difference between the two rows is the form alone.
- pytorch-cka / torch-cka compare two models at a time, so a family of M models takes
  M (M + 1) / 2 pair runs, each with its own forward passes over a DataLoader of the inputs.
  torch-cka registers hooks it never removes, so each of its pair runs gets fresh copies of
  the models; it does not disable autograd itself, so its runs sit inside torch.no_grad()
  (pytorch-cka uses inference_mode internally, benchsuite's side does too).

Measurements. Each (workload, tool) runs in a fresh subprocess with the same thread count,
after building the models and inputs and one 8-example warm-up forward per model:
- wall and CPU time: time.perf_counter and getrusage (user + system, all threads) around the whole
  computation, forward passes included, each tool's modules imported before; with --repeat k, the
  fastest of k runs in the process; with --rounds r, the fastest of r processes per tool, run in
  turn with the other tools' (a slow spell of a shared machine then slows every tool, not the one it
  meets). On a shared machine, CPU time is the steadier of the two (every tool uses the same thread
  count). The system part is mostly page faults: glibc hands the forward pass's freed activations
  back to the kernel and faults them in again, by an amount that depends on the heap's history (0.1
  to 1.2 s in one run of workload a here, for the same forward passes). benchsuite's measure_models
  keeps freed memory in the heap while it measures (benchsuite.heap), part of what its rows time; the
  peers run with glibc's defaults. --steady-malloc gives every tool's process the same fixed glibc
  thresholds (MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_; benchsuite then leaves them alone), so
  the table compares the tools' work rather than their allocators;
- peak memory: the kernel's peak-RSS counter (VmHWM) is reset through /proc/self/clear_refs
  just before the computation, and the table reports peak RSS minus the RSS at that moment.
  RSS sees every allocator (torch's included; tracemalloc would see only Python's);
- max |error|: against a float64 NumPy implementation of the same estimator, computed in its
  own subprocess from the same float32 features of the models as given (the forward pass is
  deterministic on CPU for a given thread count), so the column isolates each tool's arithmetic;
  benchsuite's row also holds the float32 rounding of the folded, channels-last forward pass.
  Non-finite cells (float32 overflow) are counted separately.

Usage (from the repository root):
  python benchmarks/cka_vs_peers.py --quick
  python benchmarks/cka_vs_peers.py --workload a
  python benchmarks/cka_vs_peers.py --workload b --with-torch-cka --json results.json
Peers: pip install --no-deps pytorch-cka==1.1.3 torch-cka==0.21 (they need matplotlib, tqdm).
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.metadata
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout without installing

BATCH = 256


@dataclass(frozen=True)
class Arch:
    depth: int
    width: int

    @property
    def name(self) -> str:
        return f"ResNet-{self.depth} x{self.width}"


@dataclass(frozen=True)
class Workload:
    archs: tuple[Arch, ...]
    n: int
    peers: tuple[str, ...]


def _family(*specs: tuple[int, int]) -> tuple[Arch, ...]:
    return tuple(Arch(d, w) for d, w in specs)


WORKLOADS = {
    "a": Workload(_family((56, 1)), 1024, ("pytorch-cka", "torch-cka")),
    "b": Workload(_family((56, 1), (56, 4), (110, 1)), 1000, ("pytorch-cka",)),
    "c": Workload(_family((20, 1), (56, 1), (110, 1), (20, 2), (56, 2), (110, 2)), 1000, ("pytorch-cka",)),
}
QUICK = {
    "a": Workload(_family((20, 1)), 300, ("pytorch-cka", "torch-cka")),
    "b": Workload(_family((20, 1), (20, 2), (32, 1)), 300, ("pytorch-cka",)),
    "c": Workload(_family((20, 1), (32, 1), (20, 2), (32, 2)), 300, ("pytorch-cka",)),
}


def workload_of(name: str, quick: bool) -> Workload:
    return (QUICK if quick else WORKLOADS)[name]


# --------------------------------------------------------------------------- models and data

def build(args) -> tuple[list[torch.nn.Module], list[list[str]], torch.Tensor]:
    from benchsuite.models import create_model, probe_points

    work = workload_of(args.workload, args.quick)
    models, layers = [], []
    for arch in work.archs:
        # Seeded per architecture, so a model has the same weights in every workload.
        torch.manual_seed(args.seed + 100 * arch.depth + arch.width)
        model = create_model("cifar_resnet", depth=arch.depth, width=arch.width, num_classes=10, in_chans=3)
        if args.calibrate_bn:
            _calibrate_bn(model, args.seed)
        models.append(model.eval())
        layers.append([p.module for p in probe_points(model)])
    x = torch.randn(work.n, 3, 32, 32, generator=torch.Generator().manual_seed(args.seed))
    return models, layers, x


def _calibrate_bn(model: torch.nn.Module, seed: int) -> None:
    """Set BatchNorm running stats from one random batch, so activations stay O(1) with depth.

    At random init the running stats are (0, 1) and each post-activation residual block grows
    the activations (~1.5x per block), to a std of ~1e8 at the end of a ResNet-110: trained models
    look like the calibrated ones, not like that.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: after one batch, exactly its statistics
    calib = torch.randn(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        model.train()(calib)


def batches(x: torch.Tensor):
    return [x[i : i + BATCH] for i in range(0, len(x), BATCH)]


def pairs(m: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(m) for j in range(i, m)]


def loader(x: torch.Tensor):
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(x), batch_size=BATCH, shuffle=False)


# --------------------------------------------------------------------------- tools
# Each returns {(i, j): heatmap between the probe points of model i (rows) and j (columns)}.

def run_reference(models, layers, x) -> dict:
    """Float64 NumPy minibatch CKA from the float32 features."""
    total = None
    for xb in batches(x):
        grams = []
        for model, names in zip(models, layers):
            for feat in _features(model, names, xb):
                grams.append(_u_centred_gram(feat.numpy()).ravel())
        g = np.stack(grams)
        n = len(xb)
        hsic = g @ g.T / (n * (n - 3))
        total = hsic if total is None else total + hsic
    d = np.sqrt(np.diag(total))
    return _heatmaps(total / np.outer(d, d), layers)


def _features(model, names, xb) -> list[torch.Tensor]:
    """Probe-point outputs by plain forward hooks (cloned: ReLU(inplace) may follow)."""
    out, handles = {}, []
    for name in names:
        def hook(module, args, output, name=name):
            out[name] = output.detach().clone()
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(xb)
    finally:
        for h in handles:
            h.remove()
    return [out[name] for name in names]


def _u_centred_gram(feat: np.ndarray) -> np.ndarray:
    x = feat.reshape(feat.shape[0], -1).astype(np.float64)
    n = x.shape[0]
    k = x @ x.T
    np.fill_diagonal(k, 0.0)
    row = k.sum(axis=1) / (n - 2)
    k = k - row[:, None] - row[None, :] + k.sum() / ((n - 1) * (n - 2))
    np.fill_diagonal(k, 0.0)
    return k


def run_benchsuite(models, layers, x, as_given: bool = False) -> dict:
    from benchsuite.measure import measure_models
    from benchsuite.models import probe_points

    result = measure_models(models, [probe_points(m) for m in models], loader(x), pcs=False, as_given=as_given)
    return _heatmaps(result.cka, layers)


def _heatmaps(cka: np.ndarray, layers) -> dict:
    """The model-pair heatmaps of a (P, P) matrix over the probe points of every model."""
    offsets = np.cumsum([0] + [len(names) for names in layers])
    return {(i, j): cka[offsets[i] : offsets[i + 1], offsets[j] : offsets[j + 1]] for i, j in pairs(len(layers))}


def run_pytorch_cka(models, layers, x) -> dict:
    from cka import compute_cka

    data, out = loader(x), {}
    for i, j in pairs(len(models)):
        # i == j passes the same object: the library then runs one forward pass per batch.
        (heatmap,) = compute_cka(models[i], models[j], data, layers=layers[i], model2_layers=layers[j],
                                 device="cpu", progress=False)
        out[i, j] = heatmap.double().numpy()
    return out


def run_torch_cka(models, layers, x) -> dict:
    from torch_cka import CKA

    data, out = loader(x), {}
    for i, j in pairs(len(models)):
        m1 = copy.deepcopy(models[i])  # its hooks stay on the models it is given
        m2 = m1 if i == j else copy.deepcopy(models[j])
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # "identical names", "no second dataloader"
            cka = CKA(m1, m2, model1_name=f"m{i}", model2_name=f"m{j}",
                      model1_layers=layers[i], model2_layers=layers[j], device="cpu")
            cka.compare(data, data)
        out[i, j] = cka.export()["CKA"].double().numpy()
    return out


TOOLS = {"reference": run_reference, "benchsuite": run_benchsuite, "benchsuite as given": partial(run_benchsuite, as_given=True),
         "pytorch-cka": run_pytorch_cka, "torch-cka": run_torch_cka}
# Each tool's modules, imported before the clock starts: the table times computations, not first imports
# (pytorch-cka's takes 0.7 s of CPU here, and any tool's user imports it once per session).
MODULES = {"reference": [], "benchsuite": ["benchsuite.measure"], "benchsuite as given": ["benchsuite.measure"],
           "pytorch-cka": ["cka"], "torch-cka": ["torch_cka"]}


# Freed memory stays in the heap and blocks of any size come from it: no page faults after the first pass.
STEADY_MALLOC = {"MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_MMAP_THRESHOLD_": str(1 << 30)}


# --------------------------------------------------------------------------- worker

def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def worker(args) -> None:
    torch.set_num_threads(args.threads)
    models, layers, x = build(args)
    tool = TOOLS[args.worker]
    for module in MODULES[args.worker]:
        importlib.import_module(module)
    with torch.inference_mode():
        for model in models:
            model(x[:8])
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS counter
    rss0 = _status_kib("VmRSS")
    walls, cpus = [], []
    for _ in range(args.repeat):
        t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        heatmaps = tool(models, layers, x)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        walls.append(time.perf_counter() - t0)
        cpus.append((r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime))
    peak = _status_kib("VmHWM") - rss0
    user, sys_ = min(cpus, key=sum)
    np.savez(args.result, **{f"{i}_{j}": h for (i, j), h in heatmaps.items()})
    # The fastest run is the least disturbed one on a shared machine.
    meta = {"wall_s": min(walls), "cpu_s": user + sys_, "sys_s": sys_, "peak_mib": peak / 1024,
            "version": _version(args.worker)}
    Path(args.result + ".json").write_text(json.dumps(meta))


def _version(tool: str) -> str:
    if tool == "reference":
        return f"numpy {np.__version__}"
    try:
        return importlib.metadata.version(tool.split()[0])
    except importlib.metadata.PackageNotFoundError:
        return "checkout"


# --------------------------------------------------------------------------- driver

@dataclass
class Row:
    workload: str
    tool: str
    version: str = ""
    pair_runs: int = 0
    forwards: int = 0
    wall_s: float | None = None
    cpu_s: float | None = None
    sys_s: float | None = None
    peak_mib: float | None = None
    max_err: float | None = None
    nonfinite: int = 0
    error: str = ""


def run_tool(args, workload: str, tool: str, tmp: Path) -> tuple[Row, dict | None]:
    m = len(workload_of(workload, args.quick).archs)
    runs = 1 if tool in ("reference", "benchsuite", "benchsuite as given") else m * (m + 1) // 2
    forwards = {"pytorch-cka": m * m, "torch-cka": m * (m + 1)}.get(tool, m)
    row = Row(workload, tool, pair_runs=runs, forwards=forwards)
    result = str(tmp / f"{workload}-{tool}.npz")
    cmd = [sys.executable, __file__, "--worker", tool, "--workload", workload, "--result", result,
           "--threads", str(args.threads), "--seed", str(args.seed), "--repeat", str(args.repeat)]
    cmd += ["--quick"] * args.quick + ["--calibrate-bn"] * args.calibrate_bn
    print(f"[{workload}] {tool} ...", file=sys.stderr, flush=True)
    env = {**os.environ, **(STEADY_MALLOC if args.steady_malloc else {})}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        row.error = lines[-1][:120] if lines else f"exit code {proc.returncode}"
        print(proc.stderr[-3000:], file=sys.stderr)
        return row, None
    meta = json.loads(Path(result + ".json").read_text())
    row.version, row.wall_s, row.cpu_s, row.sys_s, row.peak_mib = (meta[k] for k in ("version", "wall_s", "cpu_s", "sys_s",
                                                                                 "peak_mib"))
    with np.load(result) as z:
        heatmaps = {tuple(int(v) for v in k.split("_")): z[k] for k in z.files}
    return row, heatmaps


def compare(row: Row, heatmaps: dict, reference: dict) -> None:
    errs = []
    for key, ref in reference.items():
        diff = np.abs(heatmaps[key] - ref)
        row.nonfinite += int((~np.isfinite(diff)).sum())
        errs.append(diff[np.isfinite(diff)].max(initial=0.0))
    row.max_err = max(errs)


def print_table(rows: list[Row], args) -> None:
    from rich.console import Console
    from rich.table import Table

    title = "Minibatch linear CKA, CPU, " + ("quick" if args.quick else "full") + " workloads"
    if args.calibrate_bn:
        title += ", BN stats calibrated"
    if args.steady_malloc:
        title += ", steady malloc"
    table = Table(title=title)
    for col in ("workload", "tool", "version", "pair runs", "forwards", "wall s", "CPU s", "of it system", "peak RSS MiB",
                "max |err| vs f64", "wall / benchsuite", "CPU / benchsuite"):
        table.add_column(col, justify="left" if col in ("workload", "tool", "version") else "right", no_wrap=True)
    base = {r.workload: r for r in rows if r.tool == "benchsuite" and r.wall_s}
    for r in rows:
        if r.error:
            table.add_row(r.workload, r.tool, r.version, str(r.pair_runs), str(r.forwards),
                          f"[red]failed: {r.error}[/red]", "", "", "", "", "", "")
            continue
        err = "(reference)" if r.tool == "reference" else ("-" if r.max_err is None else f"{r.max_err:.1e}")
        if r.nonfinite:
            err += f" + {r.nonfinite} non-finite"
        b = base.get(r.workload)
        ratios = [f"{r.wall_s / b.wall_s:.2f}x", f"{r.cpu_s / b.cpu_s:.2f}x"] if b else ["-", "-"]
        table.add_row(r.workload, r.tool, r.version, str(r.pair_runs), str(r.forwards),
                      f"{r.wall_s:.1f}", f"{r.cpu_s:.1f}", f"{r.sys_s:.1f}", f"{r.peak_mib:.0f}", err, *ratios)
    console = Console(width=None if sys.stdout.isatty() else 200)  # logs: no wrapped cells
    console.print(table)
    for k in args.workloads:
        work = workload_of(k, args.quick)
        console.print(f"{k}: {', '.join(a.name for a in work.archs)}, n={work.n}")
    console.print(f"torch {torch.__version__}, {args.threads} threads, batch {BATCH}; forwards = passes of a "
                  "model over the n inputs; peak RSS above the RSS at the start of the computation")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS), dest="workloads",
                        help="a, b or c; repeat for several (default: all)")
    parser.add_argument("--quick", action="store_true", help="small models and n=300: a smoke run")
    parser.add_argument("--with-torch-cka", action="store_true", help="also run torch-cka on b and c (slow)")
    parser.add_argument("--steady-malloc", action="store_true",
                        help="the same fixed glibc malloc thresholds in every tool's process (see the docstring)")
    parser.add_argument("--calibrate-bn", action="store_true",
                        help="set BN running stats from a random batch (O(1) activations, as in trained models)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="time each tool this many times in its process, report the fastest")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every tool of a workload this many times, interleaved, each in a fresh process; report the fastest")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--worker", choices=sorted(TOOLS), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # a failure exits non-zero with its traceback on stderr, for the driver
        args.workload = args.workloads[0]
        worker(args)
        return

    args.workloads = args.workloads or sorted(WORKLOADS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.workloads:
            peers = WORKLOADS[w].peers
            if args.with_torch_cka and "torch-cka" not in peers:
                peers += ("torch-cka",)
            ref_row, reference = run_tool(args, w, "reference", Path(tmp))
            best: dict[str, Row] = {}
            for _ in range(args.rounds):  # tools interleaved, so a slow spell of a shared machine hits them all
                for tool in ("benchsuite", "benchsuite as given") + peers:
                    row, heatmaps = run_tool(args, w, tool, Path(tmp))
                    if heatmaps is not None and reference is not None:
                        compare(row, heatmaps, reference)
                    if tool not in best or row.cpu_s is not None and (best[tool].cpu_s is None or row.cpu_s < best[tool].cpu_s):
                        best[tool] = row
            rows += [ref_row, *best.values()]
    print_table(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in rows], indent=2))


if __name__ == "__main__":
    main()
