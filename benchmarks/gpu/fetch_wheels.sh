#!/usr/bin/env bash
# Downloads, on a machine with the package index, the wheels that the GPU machine's Python image lacks or has too old
# into the ignored folder .whl/ at the repository root; `benchmarks/gpu/run.sh` installs them there into a private
# target. The GPU image (Python 3.12, torch 2.11, transformers 5.17, no datasets/evaluate; see README "GPU check kit")
# already has every other dependency of these wheels: huggingface_hub, tokenizers, safetensors, regex, pyarrow,
# pandas, xxhash, aiohttp, requests, tqdm, pyyaml, packaging, filelock, numpy, torchvision, accelerate.
#
#   benchmarks/gpu/fetch_wheels.sh            # then carry `.whl` with the run (about 17 MB)
#
# One version per package: two versions of one package stop the whole install. `modeling_pim` itself needs no wheel:
# run.sh puts the repository root on PYTHONPATH.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$REPO/.whl"
PYTHON="${PYTHON:-python3}"
# transformers: our floor is 5.18 (setup.cfg), the image has 5.17. datasets/evaluate: missing there, with dill and
# multiprocess (their only dependencies the image lacks). fsspec: datasets 5.2 caps it at 2026.9.0, the image's may
# be newer. timm: the image's version is not known ahead; carry the one the project is tested with.
WHEELS=(
    transformers==5.24.0
    datasets==5.2.0
    evaluate==0.4.6
    dill==0.4.1
    multiprocess==0.70.19
    fsspec==2026.9.0
    timm==1.0.31
)

rm -rf "$DEST"
mkdir -p "$DEST"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --dest "$DEST" "${WHEELS[@]}"
ls -l "$DEST"
du -sh "$DEST"
