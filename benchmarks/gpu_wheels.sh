#!/usr/bin/env bash
# Wheels the GPU machine lacks for benchmarks/gpu_throughput.py (its image has torch,
# transformers, accelerate, pyarrow, fsspec, pillow, pyyaml, opencv; not diffusers,
# torchao or pydantic). Run here, in the repo root; then on the device:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
#   python3 benchmarks/gpu_throughput.py --steps 28 --batch 2 --images 4 --rows 64
# (see /work/.library/device/README.md: carry `.whl`, listed in .git/info/exclude).
set -euo pipefail
exclude="$(git rev-parse --git-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo /.whl/ >> "$exclude"
v() { python -c "import importlib.metadata as m; print(m.version('$1'))"; }
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  "diffusers==$(v diffusers)" "huggingface-hub==$(v huggingface-hub)" "safetensors==$(v safetensors)" \
  "pydantic==$(v pydantic)" "pydantic-core==$(v pydantic-core)" annotated-types typing-inspection \
  importlib-metadata "torchao>=0.10"
du -sh .whl
