#!/usr/bin/env bash
# Run here, where the package registries are reachable, before a device call: the wheels of the packages
# the device image lacks go to .whl/ (ignored by git; the device tool carries it).
# benchmarks/device_checks.sh installs them there with the project itself, which it builds from the
# carried tree, as a fresh machine would: offline, no editable install.
#   bash benchmarks/prepare_device.sh
#   run(command="bash benchmarks/device_checks.sh", carry=[".whl"], timeout_s=600)
# The carried wheels and the working tree travel within 64 MiB: pyautoattack's wheel alone is 42 MB
# (it ships the CIFAR-10 ResNet-18 that the benchmarks attack), so the project's own wheel is not carried.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
rm -rf .whl && mkdir .whl
# the device's Python is 3.12 and holds torch, torchvision, numpy, scipy, rich, pyyaml, matplotlib, pillow,
# setuptools and wheel
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .whl pyautoattack==0.2.0 torchattacks==3.5.1 nibabel==5.4.2 click==8.5.1
ls -1 .whl
