#!/usr/bin/env bash
# The GPU checks, prepared for a session that is lent a GPU machine (the device tool), which has no network and
# starts bare from an image that holds torch, transformers, peft, accelerate and pytest but not all of safemix's
# needs. Not yet run on a GPU: no session has been lent one.
#
# Here, once (downloads what that image lacks into .whl/, which git is told to ignore; about 46 MB):
#   bash scripts/gpu_check.sh --fetch
# There, as one call: command "bash scripts/gpu_check.sh", carry [".whl"], timeout_s 540. It installs the wheels
# and safemix (no network, no dependencies resolved) into /tmp/site, then runs tests/gpu (bf16/fp16 training,
# 8-bit and 4-bit QLoRA on CUDA, the harmfulness reference) and, as a check of the image's other versions, the
# quantised-training tests, writing nvidia-smi's report, the versions and the pytest log with every test's
# duration into $OUT.
# The CUDA build of vLLM (hundreds of MB) does not fit the 64 MiB a call carries, so the vllm backend's GPU run
# is not part of it.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 gguf==0.19.0
        bitsandbytes==0.50.2)

if [ "${1:-}" = "--fetch" ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
  exit 0
fi

OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
python3 -c "import torch, transformers, peft, accelerate, bitsandbytes; print('torch', torch.__version__, 'cuda',
torch.cuda.is_available(), 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate',
accelerate.__version__, 'bitsandbytes', bitsandbytes.__version__)" | tee "$OUT/versions.txt"
python3 -m pytest -q -rA --durations=0 -p no:cacheprovider tests/gpu tests/integration/test_train_quantised.py \
  2>&1 | tee "$OUT/gpu-tests.log"
