# Source on the device machine (phase B of the embedded-model carry: the GGUF travels in two halves, joined
# here as .ci/gpu-setup joins them for .ci/gpu; its header says where the halves come from):
#   carry .device/emb-b .device/wheels .whl-core  after an earlier call copied .device/emb-a to /tmp/emb-a
# Installs carried wheels into /tmp/site, joins the GGUF, and points the plugin at it.
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .device/wheels/*.whl .whl-core/*.whl ${EXTRA_WHEELS:-} || return 1
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -f /tmp/emb-a/part.00 ] && [ -f .device/emb-b/part.01 ]; then
  cat /tmp/emb-a/part.00 .device/emb-b/part.01 > /tmp/SmolLM2-135M-Instruct.Q4_1.gguf
  export ATTNLAB_EMBEDDED_GGUF=/tmp/SmolLM2-135M-Instruct.Q4_1.gguf
fi
export ATTNLAB_CACHE_DIR=/tmp/attnlab-cache
# Not pip-installed there: load the plugin by module name.
export ATTNLAB_PYTEST="python3 -m pytest -p pytest_attnlab.plugin -p no:cacheprovider"
