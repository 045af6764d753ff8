#!/usr/bin/env bash
# Quantization on the GPU: the quant suite and a decode TPOT / tokens/s / weight-memory table per
# method vs bf16 (suites/scaling/test_quant_decode.py), on a random-initialised Qwen2.5-0.5B shape (bf16, CUDA).
#
# Prepare here (once):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_24_x86_64 -d .whl bitsandbytes==0.50.2
#   bash scripts/gpu/quant_prepare_tokenizer.sh      # the embedded tokenizer files -> .device/quant-tok
# Run (device tool): carry [".whl", ".whl-core", ".device/quant-tok"], command: bash scripts/gpu/quant_h100.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/*.whl .whl-core/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export ATTNLAB_CACHE_DIR=/tmp/attnlab-cache
# Random shapes borrow the embedded tokenizer. Without the 98 MB GGUF, stand in a sparse file of its
# size and mtime so the cache entry name matches, and put the carried tokenizer files in that entry.
truncate -s "${EMBEDDED_GGUF_SIZE:-98362432}" /tmp/SmolLM2-135M-Instruct.Q4_1.gguf
touch -d "@${EMBEDDED_GGUF_MTIME:-1795438723}" /tmp/SmolLM2-135M-Instruct.Q4_1.gguf
export ATTNLAB_EMBEDDED_GGUF=/tmp/SmolLM2-135M-Instruct.Q4_1.gguf
python3 - <<'PY' || exit 1
import json, os, shutil
from pytest_attnlab.models import embedded
entry = embedded.cache_entry()
entry.mkdir(parents=True, exist_ok=True)
for name in os.listdir(".device/quant-tok"):
    shutil.copy(os.path.join(".device/quant-tok", name), entry / name)
sizes = {p.name: p.stat().st_size for p in entry.iterdir() if p.is_file()}
(entry / "attnlab-complete.json").write_text(json.dumps({"sizes": sizes}))
print("tokenizer entry", entry)
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, transformers, bitsandbytes; print('torch', torch.__version__, 'transformers', transformers.__version__, 'bitsandbytes', bitsandbytes.__version__)"
MODEL=${MODEL:-random:qwen2.5-0.5b-instruct}
QUANTS=${QUANTS:-all}
DECODE_QUANTS=${DECODE_QUANTS:-none,rtn-int8,rtn-int4-g128,rtn-int4-g128-packed,bnb-int8,bnb-nf4,awq-int4-g128,gptq-int4-g128}
QUALITY=logits_cosine,min_layer_cosine,first_divergent_layer,perplexity,perplexity_delta,greedy_agreement
QUALITY+=,greedy_prefix_tokens,weight_bytes,weight_bytes_ratio,quantize_build_seconds
timeout "${SUITE_TIMEOUT:-150}" python3 -m pytest -p pytest_attnlab.plugin -p no:cacheprovider \
  suites/correctness/test_quantization.py --attnlab-model "$MODEL" --attnlab-device cuda \
  --attnlab-quant "$QUANTS" --attnlab-report-dir "$OUT/suite" -q -rsxX 2>&1 | tail -30
python3 -m pytest_attnlab table "$OUT/suite" -k test_quantized_logits_match_baseline --by model,device,dtype,quant,attention \
  --gates -m "$QUALITY" 2>&1
# decode TPOT / tok/s / weight and device memory per method vs bf16 (suites/scaling registers rtn-int4-g128-packed)
timeout "${DECODE_TIMEOUT:-90}" python3 -m pytest -p pytest_attnlab.plugin -p no:cacheprovider \
  suites/scaling/test_quant_decode.py --attnlab-model "$MODEL" --attnlab-device cuda --attnlab-dtype bfloat16 \
  --attnlab-quant "$DECODE_QUANTS" --attnlab-perf-prompt-lens 128 --attnlab-perf-batch 1 --attnlab-perf-new-tokens 64 \
  --attnlab-report-dir "$OUT/decode" -q -rs -p no:html 2>&1 | tail -12
python3 -m pytest_attnlab table "$OUT/decode" --by quant \
  -m tpot,decode_tok_s,tpot_speedup_vs_none,weight_bytes,weight_bytes_ratio,device_bytes_held 2>&1
