#!/usr/bin/env bash
# Run here, where the package registries are reachable, before a device call: the wheels that the
# device image lacks (docs/benchmarks.md, "GPU runs") and the project's own wheel go to .whl/ (ignored by
# git; the device tool carries it). benchmarks/device_checks.sh installs exactly these there, as a fresh
# machine would: offline, no editable install.
#   bash benchmarks/prepare_device.sh
#   run(command="bash benchmarks/device_checks.sh", carry=[".whl"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
rm -rf .whl && mkdir .whl
# the device's Python is 3.12 and holds torch, torchvision, numpy, scipy, rich, pyyaml, matplotlib and pillow
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .whl pyautoattack==0.2.0 torchattacks==3.5.1 nibabel==5.4.2 click==8.5.1
rm -rf build    # setuptools would put what is left there from an earlier build (a module since removed) into the wheel
"$PY" -m pip wheel -q --no-deps -w .whl .
ls -1 .whl
