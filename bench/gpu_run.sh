#!/usr/bin/env bash
# The device call: every prepared GPU check in one command, each under its own time limit, logs and
# JSON results under $OUT (else bench/_work/gpu). Run it on the device machine as
#   run(command="bash bench/gpu_run.sh", carry=[".whl", "bench/_work/minilm"], timeout_s=420)
# after, here: pydantic's wheels for that machine's Python 3.12 in .whl/ (the rephrase stage's
# params; the machine has no network) and all-MiniLM-L6-v2 in float16 in bench/_work/minilm.
# bench/README.md ("GPU checks") says how to make both. Smoke run anywhere: SMOKE=1 bash bench/gpu_run.sh
# ONLY=quality|rephrase|semantic runs one; QUALITY_ARGS / REPHRASE_ARGS / SEMANTIC_ARGS replace a script's
# arguments; SEMANTIC_LIMIT (default 120 s) bounds gpu_semantic.py.
set -u
OUT=${OUT:-bench/_work/gpu}
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null && ! $PY -c "import pydantic" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
{ date -u; nvidia-smi 2>&1 | head -15; $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"; } \
  | tee "$OUT/gpu_info.txt"
if [ "${SMOKE:-0}" = 1 ]; then
  Q="--docs 200 --device cpu --dtypes float32,bfloat16"
  R="--shape tiny --device cpu --dtype float32 --requests 16 --max-tokens 8"
  S="--device cpu"
fi
if [ "${ONLY:-quality}" = quality ]; then
  timeout "${QUALITY_LIMIT:-150}" $PY bench/gpu_quality.py ${QUALITY_ARGS:-${Q:-}} 2>&1 | tee "$OUT/gpu_quality.log"
fi
if [ "${ONLY:-rephrase}" = rephrase ]; then
  timeout "${REPHRASE_LIMIT:-330}" $PY bench/gpu_rephrase.py ${REPHRASE_ARGS:-${R:-}} 2>&1 | grep -v "Loading weights" \
    | tee "$OUT/gpu_rephrase.log"
fi
if [ "${ONLY:-semantic}" = semantic ]; then
  timeout "${SEMANTIC_LIMIT:-120}" $PY bench/gpu_semantic.py ${SEMANTIC_ARGS:-${S:-}} 2>&1 | tee "$OUT/gpu_semantic.log"
fi
echo "gpu_run.sh done in ${SECONDS}s"
