"""Training throughput of benchsuite's execution strategies, as ratios to the plain loop measured in the same run.

    python benchmarks/train_throughput.py --quick            # the default combination, ResNet-20 at 28x28 (~4 min)
    python benchmarks/train_throughput.py [--device cuda] [--depths 20 56 110] [--widths 1 4] [--sizes 28 32]

Every figure is images/s of benchsuite's own training loop (`benchsuite.train.loop.train_runs`: the device
loader, SGD, the per-epoch evaluation excluded as `train_seconds` excludes it) on random CIFAR-shaped data
(1x28x28 as Fashion-MNIST, 3x32x32 as CIFAR), batch 128, after a warm-up step. Strategies:

- plain: one model, one process, `--threads` torch threads (default 1): the baseline, ratio 1.
- stacked K: K seeds as one grouped model (`train.stack_seeds`), in one process.
- jobs P: P worker processes with one thread each, each training its own model at the same time
  (steady state: images/s summed over the workers).
- default, S seeds: what `bench run` picks for a sweep of S seeds of one architecture (jobs, threads and
  stacking as `bench run` chooses them on this device), from the first step to the last run's end.

On CPU it also times the plain loop with `precision: bf16` (channels-last, oneDNN). On CUDA it also tries,
for the plain loop and stacking: fp32 against bf16 autocast (`precision`), without
channels_last, and `torch.compile`. On a machine shared with other processes, figures move with their load:
the ratios, measured within one run, move less than the images/s.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from benchsuite.models import create_model
from benchsuite.spec.schema import DatasetSpec, RunConfig, TrainSpec
from benchsuite.train.data import PreparedData
from benchsuite.train.loop import autocast_dtype, build_optimizer, train_runs

BATCH = 128


def synthetic(size: int, steps: int, seed: int = 0) -> PreparedData:
    chans = 1 if size == 28 else 3
    g = torch.Generator().manual_seed(seed)
    n = BATCH * steps
    x = torch.randint(0, 256, (n, chans, size, size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return PreparedData(train_x=x, train_y=y, eval_x=x[:BATCH], eval_y=y[:BATCH], mean=(127.5,) * chans,
                        std=(64.0,) * chans, num_classes=10, classes=[str(c) for c in range(10)], eval_batch_size=BATCH)


def config(depth: int, width: int, seed: int, precision: str = "auto", stack_seeds="auto") -> RunConfig:
    return RunConfig(family="cifar_resnet", params={"depth": depth, "width": width}, dataset=DatasetSpec(),
                     train=TrainSpec(epochs=1, batch_size=BATCH, lr=0.05, precision=precision, stack_seeds=stack_seeds),
                     seed=seed)


def train_seconds(depth: int, width: int, seeds: list[int], data: PreparedData, device: torch.device,
                  precision: str = "auto", channels_last: bool = True) -> float:
    """Seconds of benchsuite's loop training `seeds` together (one seed: the plain loop) for one epoch."""
    configs = [config(depth, width, s, precision) for s in seeds]
    models = []
    for s in seeds:
        torch.manual_seed(s)
        models.append(create_model("cifar_resnet", num_classes=10, in_chans=data.in_chans, image_size=data.image_size,
                                   depth=depth, width=width))
    stacked = create_model("cifar_resnet", num_classes=10, in_chans=data.in_chans, image_size=data.image_size,
                           stack=len(seeds), depth=depth, width=width) if len(seeds) > 1 else None
    results = train_runs(configs, data, models, device=device, stacked=stacked, checkpoints=[None] * len(seeds),
                         on_epoch=[None] * len(seeds), channels_last=channels_last)
    return results[0].train_seconds


def rate(depth: int, width: int, k: int, size: int, steps: int, device: torch.device, precision: str = "auto",
         channels_last: bool = True) -> float:
    """Images/s (all K runs counted) after a one-step warm-up."""
    seeds = list(range(k))
    train_seconds(depth, width, seeds, synthetic(size, 1), device, precision, channels_last)
    return k * BATCH * steps / train_seconds(depth, width, seeds, synthetic(size, steps), device, precision, channels_last)


def _worker(units, depth, width, size, steps, device, ready, go, out):
    torch.set_num_threads(1)
    rate(depth, width, 1, size, 1, torch.device(device))  # warm-up, before the common start
    ready.wait()
    go.wait()
    busy = 0.0
    while True:
        try:
            seeds = units.get_nowait()
        except Exception:
            break
        busy += train_seconds(depth, width, seeds, synthetic(size, steps), torch.device(device))
    out.put(busy)


def parallel_seconds(units: list[list[int]], workers: int, depth: int, width: int, size: int, steps: int,
                     device: str) -> float:
    """Seconds until `workers` processes (one thread each), taking `units` from one queue, have trained all."""
    ctx = mp.get_context("spawn")
    queue, out = ctx.Queue(), ctx.Queue()
    for u in units:
        queue.put(u)
    ready, go = ctx.Barrier(workers + 1), ctx.Barrier(workers + 1)
    procs = [ctx.Process(target=_worker, args=(queue, depth, width, size, steps, device, ready, go, out))
             for _ in range(workers)]
    for p in procs:
        p.start()
    ready.wait()
    go.wait()
    busy = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return max(busy)  # the workers started together; the sweep ends with the last one


def default_units(seeds: int, device: torch.device) -> tuple[int, list[list[int]]]:
    """Workers and units `bench run` picks for `seeds` seeds of one cifar_resnet architecture (its own rules)."""
    from benchsuite.runner.jobs import Job
    from benchsuite.runner.plan import stack_units
    from benchsuite.runner.processes import default_jobs
    from benchsuite.spec.schema import MeasureSpec

    jobs = [Job(run_id=str(s), name="r", config=config(20, 1, s), measure=MeasureSpec(), analyses=[], spec_hash="",
                artifacts="", device=device.type) for s in range(seeds)]
    return default_jobs(device), [[j.config.seed for j in u] for u in stack_units(jobs)]


def default_ratio(depth: int, width: int, size: int, steps: int, seeds: int, device: torch.device,
                  plain: float) -> tuple[float, str]:
    workers, units = default_units(seeds, device)
    if workers == 1:
        seconds = sum(train_seconds(depth, width, u, synthetic(size, steps), device) for u in units)
    else:
        seconds = parallel_seconds(units, min(workers, len(units)), depth, width, size, steps, device.type)
    how = f"jobs {min(workers, len(units))}, units {'+'.join(str(len(u)) for u in units)}"
    return seeds * BATCH * steps / seconds / plain, how


def cuda_variant(depth: int, width: int, k: int, size: int, steps: int, amp: bool, channels_last: bool,
                 compiled: bool) -> float:
    """Images/s of a bare training step on CUDA (the variants benchsuite's loop does not switch)."""
    device = torch.device("cuda")
    model = create_model("cifar_resnet", num_classes=10, in_chans=1 if size == 28 else 3, image_size=size,
                         stack=k, depth=depth, width=width).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = build_optimizer(model, config(depth, width, 0).train)
    step_model = torch.compile(model) if compiled else model
    x = torch.randn(BATCH, k * (1 if size == 28 else 3), size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (BATCH, k), device=device)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext():
            out = step_model(x)
            out = out if k > 1 else out.unsqueeze(1)
            loss = sum(F.cross_entropy(out[:, i].float(), y[:, i]) for i in range(k))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up (compilation)
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return k * BATCH * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the default combination for ResNet-20 x1 at 28x28")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56, 110])
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 32])
    parser.add_argument("--stacks", type=int, nargs="+", default=[2, 3, 4, 8])
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the `default` sweep")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per figure (default 20 on CPU, 50 on GPU)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the plain and stacked loops")
    parser.add_argument("--repeats", type=int, default=None, help="rounds per figure, median reported (default 3 with --quick, else 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps = args.steps or (50 if device.type == "cuda" else 20)
    args.repeats = args.repeats or (3 if args.quick else 1)
    if args.quick:
        args.depths, args.widths, args.sizes, args.stacks = [20], [1], [28], [3]
    cores = os.cpu_count() or 1
    print(f"device {device}, {cores} cores, torch {torch.__version__}, batch {BATCH}, {steps} steps per figure,"
          f" plain loop with {args.threads} thread(s)")
    print("| model | input | plain img/s | strategy | img/s | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for depth in args.depths:
        for width in args.widths:
            for size in args.sizes:
                # Rounds interleave the strategies, so that a slow spell of a shared host hits them alike; each
                # ratio is against its own round's plain loop, and the median round is reported.
                rounds = [figures(args, depth, width, size, steps, device, cores) for _ in range(args.repeats)]
                plain = statistics.median(p for p, _ in rounds)
                for name in rounds[0][1]:
                    value = statistics.median(r[name] for _, r in rounds)
                    ratios = sorted(r[name] / p for p, r in rounds)
                    ratio_text = "" if name.startswith("GPU memory") else f"{statistics.median(ratios):.2f}x"
                    if ratio_text and len(ratios) > 1:
                        ratio_text += f" ({ratios[0]:.2f}-{ratios[-1]:.2f})"
                    print(f"| ResNet-{depth} x{width} | {size}x{size} | {plain:,.0f} | {name} | {value:,.0f} | {ratio_text} |",
                          flush=True)


def figures(args, depth: int, width: int, size: int, steps: int, device: torch.device, cores: int) -> tuple[float, dict]:
    """One round: the plain loop's images/s and each strategy's."""
    plain = rate(depth, width, 1, size, steps, device, channels_last=False)
    rows = []
    if not args.quick:
        rows += [(f"stacked K={k}", rate(depth, width, k, size, steps, device)) for k in args.stacks]
        if device.type == "cpu" and cores > 1:
            seconds = parallel_seconds([[0]] * cores, cores, depth, width, size, steps, "cpu")
            rows.append((f"jobs {cores}", cores * BATCH * steps / seconds))
        if device.type == "cuda":
            rows += _cuda_rows(depth, width, size, steps, max(args.stacks))
    rows.append(("plain, channels-last", rate(depth, width, 1, size, steps, device)))
    if device.type == "cpu":  # opt-in on CPU
        rows.append(("plain, channels-last, precision bf16", rate(depth, width, 1, size, steps, device, "bf16")))
    ratio, how = default_ratio(depth, width, size, steps, args.seeds, device, plain)
    rows.append((f"default, {args.seeds} seeds ({how})", ratio * plain))
    if device.type == "cuda":
        rows.append(("GPU memory peak (MiB)", torch.cuda.max_memory_allocated() / 2**20))
    return plain, dict(rows)


def _cuda_rows(depth: int, width: int, size: int, steps: int, k: int) -> list[tuple[str, float]]:
    """The loop in fp32, and bare training steps in the variants the loop does not switch, each scaled to the
    loop by the bare step's rate in the loop's own setting (bf16 autocast, channels_last, not compiled)."""
    cuda = torch.device("cuda")
    rows = [("plain, fp32", rate(depth, width, 1, size, steps, cuda, "fp32")),
            (f"stacked K={k}, fp32", rate(depth, width, k, size, steps, cuda, "fp32"))]
    for kk in (1, k):
        loop = rate(depth, width, kk, size, steps, cuda)
        base = cuda_variant(depth, width, kk, size, steps, amp=True, channels_last=True, compiled=False)
        for name, kwargs in [("contiguous", dict(amp=True, channels_last=False, compiled=False)),
                             ("torch.compile", dict(amp=True, channels_last=True, compiled=True))]:
            try:
                rows.append((f"{'plain' if kk == 1 else f'stacked K={kk}'}, {name} (bare-step ratio)",
                             cuda_variant(depth, width, kk, size, steps, **kwargs) / base * loop))
            except Exception as exc:  # torch.compile needs a compiler toolchain
                print(f"  ({name} K={kk} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
    return rows


if __name__ == "__main__":
    main()
