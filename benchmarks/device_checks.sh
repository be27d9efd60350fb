#!/usr/bin/env bash
# Every GPU measurement still missing from docs/benchmarks.md, in one call of the device tool
# (one call fits: a task is lent 15 minutes of device time, start-up included). Steps run in
# order of importance, each under its own time limit and all of them within BUDGET seconds (585 by
# default, under the tool's 600 s per call): a step gets what is left when it starts, and one that
# would get under 10 s is skipped and says so, so the last, least important steps are the ones cut.
# Their output goes to $OUT/device_checks.log and the attack results JSON files to $OUT (8 files at
# most come back).
#
# Prepare here, once per session (the wheels of the packages the device image lacks):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl pyautoattack==0.2.0 torchattacks==3.5.1 foolbox==3.3.4
# then: run(command="bash benchmarks/device_checks.sh", carry=[".whl"], timeout_s=600).
# Try it here first, on the CPU with tiny sizes: DEVICE=cpu SMALL=1 bash benchmarks/device_checks.sh
set -u
DEVICE=${DEVICE:-cuda}
SMALL=${SMALL:-0}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
SITE=$(mktemp -d)  # the carried wheels, installed for this run only
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || exit 1
    export PYTHONPATH=$SITE:$PWD
else
    export PYTHONPATH=$PWD
fi

LOG=$OUT/device_checks.log
BUDGET=${BUDGET:-585}
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - SECONDS))
    if [ "$left" -lt 10 ]; then
        echo "== $name: skipped, ${left}s of the ${BUDGET}s budget left" | tee -a "$LOG"
        return
    fi
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

step environment 20 $PY -c "import torch, attacks; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
step attack_pgd 60 $PY benchmarks/attack_pgd.py --devices "$DEVICE" --n "$N"
step attack_autoattack 130 $PY benchmarks/attack_autoattack.py --devices "$DEVICE" --n "$N" --eps "$AA_EPS"
step attack_square 90 $PY benchmarks/attack_square.py --devices "$DEVICE" --n "$N" --eps 1/255 $SQUARE
# the design card's command at full size: all 2000 embedded test points, both JPEG variants
step train_jpegdl 60 $PY -m robust_kd.cli train --model $MODEL --recipe quick --device "$DEVICE" --runs-dir "$RUNS" $TRAIN
step attack_full_size 120 $PY -m robust_kd.cli attack --model $MODEL --suite autoattack --device "$DEVICE" \
    --runs-dir "$RUNS" --batch-size 1000 $FULL
step train_throughput 30 $PY benchmarks/train_throughput.py --devices "$DEVICE" $TRAINING
step jpeg_overhead 20 $PY benchmarks/jpeg_overhead.py --devices "$DEVICE" $JPEG
step distill_overhead 25 $PY benchmarks/distill_overhead.py --devices "$DEVICE" $DISTILL
# bf16 on the GPU: AutoAttack timed a third time with the attacks in bf16 (verdicts compared), and
# the attack passes' rate against the matmul rate in fp32 and bf16
step attack_autoattack_bf16 120 $PY benchmarks/attack_autoattack.py --devices "$DEVICE" --n "$N" --eps 8/255 --bf16
step attack_roofline 40 $PY benchmarks/attack_roofline.py --devices "$DEVICE" $ROOFLINE
find "$RUNS" -path "*attacks*" -name "*.json" ! -path "*/.state/*" | head -n 6 | xargs -r cp -t "$OUT"
echo "== done after ${SECONDS}s; logs in $OUT"
