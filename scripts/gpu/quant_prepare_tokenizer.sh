#!/usr/bin/env bash
# Copy the embedded tokenizer files (not the weights) to .device/quant-tok for quant_h100.sh.
set -euo pipefail
src=$(python3 -c "from pytest_attnlab.models import embedded; print(embedded.checkpoint())")
mkdir -p .device/quant-tok
for f in tokenizer.json tokenizer_config.json config.json chat_template.jinja generation_config.json; do
  [ -f "$src/$f" ] && cp "$src/$f" .device/quant-tok/
done
ls -la .device/quant-tok
