#!/usr/bin/env bash
# The GPU path in one go, on a machine with a GPU (or `--device cpu` to try the script itself here):
#   bash benchmarks/gpu_check.sh [--device cuda|cpu] [--out DIR]
# 1. installs benchsuite (editable, no downloads: torch must be there already) and prints the device;
# 2. `bench run` of a CIFAR-shaped synthetic sweep (the synthetic dataset at 3x32x32, ResNet-20
#    x1 and x4, 4 seeds stacked, 2 epochs) with its wall time, images/s per model and per card, GPU memory;
# 3. benchmarks/train_throughput.py (stacked K = 2, 4, 8 against separate, bf16 / channels_last / compile);
# 4. benchmarks/cka_vs_peers.py --quick.
# Everything is printed and kept under DIR (default $OUT, else ./gpu_check_out).
set -euo pipefail
device=cuda
out=${OUT:-gpu_check_out}
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--device cuda|cpu] [--out DIR]" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
log() { echo "== $*" | tee -a "$out/summary.txt"; }

log "install"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
found=$(python -c 'import benchsuite, os; print(os.path.dirname(os.path.dirname(benchsuite.__file__)))' 2>/dev/null || true)
if [ "$found" != "$repo" ]; then  # never repoint an install that serves another checkout
  python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -3 || log "pip install failed; using PYTHONPATH"
fi
python - <<EOF | tee -a "$out/summary.txt"
import torch, benchsuite
print("benchsuite", benchsuite.__version__, "torch", torch.__version__, "cuda", torch.version.cuda)
if "$device" == "cuda":
    assert torch.cuda.is_available(), "no CUDA device"
    p = torch.cuda.get_device_properties(0)
    print(p.name, f"{p.total_memory / 2**30:.0f} GiB")
EOF

if [ "$device" = cuda ]; then depths="[20]"; widths="[1, 4]"; epochs=2; n=50000; steps=50; else
  depths="[8]"; widths="[1]"; epochs=1; n=512; steps=2; fi
log "bench run on $device: CIFAR-shaped synthetic data, $n training images"
work=$(mktemp -d)
# CIFAR-10's files are md5-checked, so the data is the synthetic family at CIFAR's shape, registered first
cat > "$work/run.py" <<'EOF'
import sys
from benchsuite.data.registry import register_dataset
from benchsuite.data.synthetic import make_synthetic
n = int(sys.argv.pop(1))
register_dataset("cifar_shaped", "synthetic prototypes + noise, 3x32x32", locate=lambda root: "generated")(
    lambda root: make_synthetic(shape=(3, 32, 32), train_size=n, test_size=1000, name="cifar_shaped"))
from benchsuite.cli import app
app(prog_name="bench")
EOF
cat > "$work/spec.yaml" <<EOF
name: gpu_check
dataset: {name: cifar_shaped, eval_size: 1000}
family: {name: cifar_resnet, grid: {depth: $depths, width: $widths}}
seeds: [0, 1, 2, 3]
train: {epochs: $epochs, batch_size: 128, lr: 0.1, augmentation: flip_crop}
measure: {batch_size: 500}
analyses: [cka, pcs]
EOF
start=$(date +%s.%N)
(cd "$work" && python run.py "$n" run spec.yaml --device "$device" --jobs 1 --db "$work/bench.duckdb" 2>&1) \
  | tail -8 | tee -a "$out/summary.txt"
end=$(date +%s.%N)
python - "$work/bench.duckdb" "$n" "$start" "$end" <<'EOF' | tee -a "$out/summary.txt"
import sys, duckdb
db, n, start, end = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
rows = duckdb.connect(db, read_only=True).execute(
    "SELECT name, seed, epochs_done, train_seconds, device FROM runs ORDER BY name, seed").fetchall()
units = {}  # seeds stacked together share their training time
for name, seed, epochs, seconds, device in rows:
    print(f"{name} seed={seed}: {n * epochs / seconds:,.0f} images/s per model ({device})")
    t = units.setdefault(name, [0.0, 0])
    t[0] = max(t[0], seconds) if device.endswith("stacked") else t[0] + seconds
    t[1] += n * epochs
print(f"wall {end - start:.0f} s; per card while training: "
      f"{sum(t[1] for t in units.values()) / sum(t[0] for t in units.values()):,.0f} images/s")
EOF
if [ "$device" = cuda ]; then nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv | tee -a "$out/summary.txt"; fi

log "train_throughput.py"
if [ "$device" = cuda ]; then
  python benchmarks/train_throughput.py --device cuda --depths 20 56 110 --widths 1 4 --sizes 32 --stacks 2 4 8 \
    --steps $steps 2>&1 | tee "$out/train_throughput.md"
else
  python benchmarks/train_throughput.py --device cpu --depths 8 --widths 1 --sizes 32 --stacks 2 --steps $steps \
    2>&1 | tee "$out/train_throughput.md"
fi

log "cka_vs_peers.py --quick"
if python -c "import cka, torch_cka" 2>/dev/null; then
  python benchmarks/cka_vs_peers.py --quick 2>&1 | tee "$out/cka_vs_peers.md"
else
  log "pytorch-cka / torch-cka not installed here: skipped (pip install pytorch-cka==1.1.3 torch-cka==0.21)"
fi
rm -rf "$work"
log "done: $out"
