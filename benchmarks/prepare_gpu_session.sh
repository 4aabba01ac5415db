#!/bin/sh
# Here, before a device lease: what benchmarks/gpu_session.py needs there, in two ignored folders.
#   .whl/                  keras, namex, optree for Python 3.12 (the device has JAX, numpy, click, pillow,
#                          matplotlib, h5py, rich and ml-dtypes already; versions pinned by constraints.txt)
#   .data/fashion-mnist/   the four IDX .gz files (Debian's dataset-fashion-mnist package)
# Together about 33 MB, inside the 64 MiB that travels with a device command. The command to run there,
# with carry [".whl", ".data"], is printed at the end.
set -eu
cd "$(dirname "$0")/.."
# The device's Python 3.12 pin: not the one marked python_version < "3.11" (constraints.txt pins 3.10 apart).
pin() { grep -i "^$1==" constraints.txt | grep -v 'python_version < ' | cut -d= -f3 | cut -d';' -f1; }
fashion=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
if [ ! -f "$fashion/train-images-idx3-ubyte.gz" ]; then
    echo "error: no Fashion-MNIST in $fashion: apt-get install -y dataset-fashion-mnist, or set FASHION_MNIST_DIR" >&2
    exit 2
fi
mkdir -p .whl .data/fashion-mnist
rm -f .whl/*.whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    "keras==$(pin keras)" "namex==$(pin namex)" "optree==$(pin optree)"
cp "$fashion"/*-ubyte.gz .data/fashion-mnist/
du -sh .whl .data
cat <<'CMD'
device run, carry [".whl", ".data"], timeout_s 600:
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; nvidia-smi -L; PYTHONUNBUFFERED=1 python3 benchmarks/gpu_session.py --data-dir .data/fashion-mnist --out $OUT --budget 540 2>&1 | tee $OUT/session.log
CMD
