#!/usr/bin/env bash
# Issue 17 on a GPU: a quantized candidate of the random Qwen2.5-0.5B shape, exported by the project's own
# exporter, through the correctness suite and the candidate perf test against its reference.
#   bash scripts/gpu/candidate.sh REPORTS [FORMAT] [QUANT]
# FORMAT: compressed-tensors (default), gptq or awq; QUANT: rtn-int4-g64-zp (default) or any RTN/AWQ quantizer.
# The reference is saved as a folder (with the embedded tokenizer, so the text tests run) and reloaded as
# --attnlab-model; the candidate is that folder's weights quantized and exported.
# ATTNLAB_DEVICE (default cuda) and ATTNLAB_CANDIDATE_WORK (default /tmp/attnlab-candidate) override.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPORTS=${1:?usage: candidate.sh REPORTS [FORMAT] [QUANT]}; FMT=${2:-compressed-tensors}; QUANT=${3:-rtn-int4-g64-zp}
. .ci/gpu-setup || exit 1
WORK=${ATTNLAB_CANDIDATE_WORK:-/tmp/attnlab-candidate}
python3 - "$WORK" "$FMT" "$QUANT" <<'EOF' || exit 1
import sys
from pathlib import Path

from pytest_attnlab.models.embedded import tokenizer as embedded_tokenizer
from pytest_attnlab.models.loader import load_model
from pytest_attnlab.models.spec import parse_model
from pytest_attnlab.quant import quantize
from pytest_attnlab.quant.export import export

work, fmt, quant = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
ref_dir = work / "reference"
if not (ref_dir / "config.json").is_file():
    built = load_model(parse_model("random:qwen2.5-0.5b-instruct"))
    built.model.save_pretrained(ref_dir)
    embedded_tokenizer().save_pretrained(ref_dir)
reference = load_model(parse_model(str(ref_dir)))
folder = export(quantize(reference, quant, cache=False), fmt, dest=work / f"{quant}-{fmt}")
print(f"candidate.sh: reference {ref_dir}, candidate {folder}")
EOF
CAND="$WORK/$QUANT-$FMT"
common=(--attnlab-device "${ATTNLAB_DEVICE:-cuda}" --attnlab-model "$WORK/reference" --attnlab-candidate "$CAND" -q -rfEs)
status=0
"${PYTEST[@]}" suites/correctness "${common[@]}" --attnlab-report-dir "$REPORTS/correctness" || status=$?
"${PYTEST[@]}" suites/perf/test_candidate_perf.py "${common[@]}" --attnlab-report-dir "$REPORTS/perf" || status=$?
exit $status
