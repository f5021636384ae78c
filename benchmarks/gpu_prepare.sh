#!/usr/bin/env bash
# Fill the ignored folder .gpu/ with what benchmarks/gpu_run.sh needs on the device machine
# (which has torch, numpy, Pillow, rich, scipy and onnxruntime, and reaches no network): the
# shared weights, the demo catalogue and the wheels of Vitrine's other imports for its
# Python 3.12. About 30 MB; the device call carries it (carry: [".gpu"]).
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${VITRINE_SHARED:-../shared}"
python="${PYTHON:-.venv/bin/python}"
rm -rf .gpu && mkdir -p .gpu/whl
cp "$shared/models/mobilenet_v2_imagenet.pth" .gpu/
cp -r "$shared/data/demo-catalog" .gpu/demo-catalog
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
    pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 annotated-types==0.8.0 \
    typing-inspection==0.4.5 typing-extensions==4.16.0 python-dotenv==1.2.4 \
    imagehash==4.3.2 pywavelets==1.10.0
du -sh .gpu
echo "device call: command 'bash benchmarks/gpu_run.sh', carry [\".gpu\"], timeout_s 400"
