#!/usr/bin/env bash
# Every GPU measurement still missing from docs/benchmarks.md, in one call of the device tool
# (one call fits: a task is lent 15 minutes of device time, start-up included). Steps run in
# order of importance, each under its own time limit and all of them within BUDGET seconds (585 by
# default, under the tool's 600 s per call): a step gets what is left when it starts, and one that
# would get under 10 s is skipped and says so, so the last, least important steps are the ones cut.
# Their output goes to $OUT/device_checks.log, a table of every step to $OUT/summary.md, and the
# attack results JSON files to $OUT (8 files at most come back).
#
# It runs the project as a fresh machine would: the project's wheel is built from this tree, offline
# with the machine's own setuptools, and installed with the wheels in WHEELS (default .whl/, made here by
# benchmarks/prepare_device.sh: the packages the device image lacks) into a folder of their own; every
# step runs outside the source tree, so that the installed package, not the checkout, is imported.
#   bash benchmarks/prepare_device.sh
#   run(command="bash benchmarks/device_checks.sh", carry=[".whl"], timeout_s=600)
# The rehearsal on a CPU runs the very same steps with tiny sizes (tests/test_device_checks.py does):
#   DEVICE=cpu SMALL=1 bash benchmarks/device_checks.sh
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
DEVICE=${DEVICE:-cuda}
SMALL=${SMALL:-0}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WHEELS=${WHEELS:-$REPO/.whl}
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
BUILT=$(mktemp -d)   # the project's wheel, built here offline from a clean copy of the sources (a build/ left
SOURCES=$(mktemp -d) # in the tree by an earlier build could hold modules since removed)
tar -C "$REPO" --exclude=./.git --exclude=./.whl --exclude=./build --exclude=./dist --exclude=./runs \
    --exclude='./.*venv' --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -C "$SOURCES" -xf - || exit 1
if ! $PY -m pip wheel -q --no-deps --no-index --no-build-isolation -w "$BUILT" "$SOURCES" >"$BUILT/build.log" 2>&1; then
    echo "device_checks: could not build robust-kd's wheel offline (it needs setuptools>=68 and wheel):" >&2
    tail -n 5 "$BUILT/build.log" >&2
    exit 2
fi
SITE=$(mktemp -d)  # the project and the carried wheels, installed for this run only
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$BUILT"/*.whl \
    $(ls "$WHEELS"/*.whl 2>/dev/null) || exit 1
export PYTHONPATH=$SITE
if ! $PY -c "import torchattacks, pyautoattack, nibabel" 2>/dev/null; then
    echo "device_checks: torchattacks, pyautoattack or nibabel is missing here; run 'bash benchmarks/prepare_device.sh'" \
        "and carry .whl" >&2
    exit 2
fi
BENCH=$REPO/benchmarks
cd "$(mktemp -d)" || exit 1   # outside the source tree: 'python -m robust_kd.cli' imports the installed package

LOG=$OUT/device_checks.log
BUDGET=${BUDGET:-585}
SCALE=${SCALE:-1}   # each step's limit times this (the rehearsal on a busy CPU; 1 on the device)
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - SECONDS))
    if [ "$left" -lt 10 ]; then
        echo "== $name: skipped, ${left}s of the ${BUDGET}s budget left" | tee -a "$LOG"
        return
    fi
    limit=$((limit * SCALE))
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (at most ${limit}s)" | tee -a "$LOG"
    local started=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG" | tail -n 25
    echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - started))s" | tee -a "$LOG"
}

MODEL=jpegdl_resnet18
if [ "$SMALL" = 1 ]; then  # the same steps with sizes a 2-core CPU finishes inside the limits
    N=6; AA_EPS=8/255; SQUARE="--queries 200"; MODEL=jpegdl_resnet8; TRAIN="epochs=1"; FULL="--n 20"
    TRAINING="--models resnet8x4 --batches 128 --steps 1 --repeats 1"; JPEG="--models resnet8 --batch 128 --steps 1 --repeats 1"
    DISTILL="--teacher resnet8x4 --student resnet8 --batches 128 --steps 1"; ROOFLINE="--batches 1,9"
else
    # the last three at 20 steps and one repeat: their GPU defaults (50 steps, 2 repeats) may not fit their limits
    N=40; AA_EPS=8/255,1/255; SQUARE=""; TRAIN=""; FULL=""
    TRAINING="--steps 20 --repeats 1"; JPEG="--steps 20 --repeats 1"; DISTILL="--steps 20"; ROOFLINE="--batches 1,36,500,2000"
fi
RUNS=$(mktemp -d)  # checkpoints stay there: only the results come back

step environment 20 $PY -c "import torch, attacks, robust_kd.configs; print(torch.__version__, \
    torch.cuda.is_available() and torch.cuda.get_device_name(), 'robust_kd from', robust_kd.configs.__file__)"
step attack_pgd 60 $PY $BENCH/attack_pgd.py --devices "$DEVICE" --n "$N"
step attack_autoattack 130 $PY $BENCH/attack_autoattack.py --devices "$DEVICE" --n "$N" --eps "$AA_EPS"
step attack_square 90 $PY $BENCH/attack_square.py --devices "$DEVICE" --n "$N" --eps 1/255 $SQUARE
# the design card's command at full size: all 2000 embedded test points, both JPEG variants
step train_jpegdl 60 $PY -m robust_kd.cli train --model $MODEL --recipe quick --device "$DEVICE" --runs-dir "$RUNS" $TRAIN
step attack_full_size 120 $PY -m robust_kd.cli attack --model $MODEL --suite autoattack --device "$DEVICE" \
    --runs-dir "$RUNS" --batch-size 1000 $FULL
step train_throughput 30 $PY $BENCH/train_throughput.py --devices "$DEVICE" $TRAINING
step jpeg_overhead 20 $PY $BENCH/jpeg_overhead.py --devices "$DEVICE" $JPEG
step distill_overhead 25 $PY $BENCH/distill_overhead.py --devices "$DEVICE" $DISTILL
# bf16 on the GPU: AutoAttack timed a third time with the attacks in bf16 (verdicts compared), and
# the attack passes' rate against the matmul rate in fp32 and bf16
step attack_autoattack_bf16 120 $PY $BENCH/attack_autoattack.py --devices "$DEVICE" --n "$N" --eps 8/255 --bf16
step attack_roofline 40 $PY $BENCH/attack_roofline.py --devices "$DEVICE" $ROOFLINE
# AutoAttack's L2 and L1 versions against pyautoattack (the normally trained ResNet-18: every point breaks)
step attack_autoattack_l2 45 $PY $BENCH/attack_autoattack.py --devices "$DEVICE" --n "$N" --norm L2 --eps 0.5
step attack_autoattack_l1 45 $PY $BENCH/attack_autoattack.py --devices "$DEVICE" --n "$N" --norm L1 --eps 12
find "$RUNS" -path "*attacks*" -name "*.json" ! -path "*/.state/*" | head -n 6 | xargs -r cp -t "$OUT"
# the table of every step: its exit, its seconds and its last lines (where the benchmarks print their ratios)
$PY - "$LOG" > "$OUT/summary.md" <<'PYTHON'
import re, sys
rows, name, lines = [], None, []
for line in open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines():
    start, end = re.match(r"== (\S+) \(at most", line), re.match(r"== (\S+): (exit (\d+) after (\d+)s|skipped.*)", line)
    if start:
        name, lines = start.group(1), []
    elif end:
        last = " ".join(text.strip() for text in lines if text.strip())[-300:].replace("|", "\\|")
        rows.append(f"| {end.group(1)} | {end.group(3) or 'skipped'} | {end.group(4) or ''} | {last} |")
        name, lines = None, []
    elif name:
        lines = (lines + [line])[-3:]
print("| step | exit | seconds | last lines |\n|---|---:|---:|---|")
print("\n".join(rows))
PYTHON
cat "$OUT/summary.md"
echo "== done after ${SECONDS}s; logs in $OUT"
