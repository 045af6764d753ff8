#!/usr/bin/env bash
# On the lent H200 (no network): install vLLM from the parts that scripts/vllm_h200/prepare.sh made here.
#   bash scripts/vllm_h200/install.sh .device/vllm/part-NN      one call per part, carrying that folder
# Each call copies its part to $VLLM_PARTS (default /tmp/vllm-parts), which lasts only while the machine
# stays warm (30 s after a call): make the calls back to back (README.md beside this). The call that
# brings the last missing part joins them, checks the tar's sha256 against the part's MANIFEST, unpacks
# it, leaves out the wheels whose package the image already holds at a fitting version (pick.py), installs
# the rest with `pip install --no-index --no-deps --no-compile --target $VLLM_SITE` (default
# /tmp/vllm-site) and imports vllm from there. Later calls on the same warm machine then only need
#   . /tmp/vllm-site.env      (PYTHONPATH=/tmp/vllm-site plus the folders its .pth files name)
# A call with no argument (or a part already in) reports what is there; install.sh --status likewise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PARTS_DIR=${VLLM_PARTS:-/tmp/vllm-parts}
SITE=${VLLM_SITE:-/tmp/vllm-site}
mkdir -p "$PARTS_DIR"

ENV_FILE=$SITE.env  # what later calls source: PYTHONPATH with the site and the paths its .pth files add
show_version() {
  (. "$ENV_FILE" && python3 -c "import vllm; print('vllm', vllm.__version__, 'from', vllm.__file__)" && python3 - <<'PY'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available())
for m in ("vllm._C_stable_libtorch", "numpy", "numba", "transformers", "flashinfer", "cutlass", "xgrammar",
          "cv2", "pydantic"):  # a report, not a gate: vLLM imports most of these only on some paths
    try:
        mod = importlib.import_module(m)
        print("  import %-24s ok %s" % (m, getattr(mod, "__version__", "")))
    except Exception as e:
        print("  import %-24s FAILED %s: %s" % (m, type(e).__name__, str(e).splitlines()[0] if str(e) else ""))
PY
)
}

part=${1:---status}
if [ "$part" != --status ]; then
  [ -f "$part/MANIFEST" ] || { echo "install.sh: $part/MANIFEST missing: carry the part folder" >&2; exit 2; }
  # MANIFEST: NAME=... PARTS=N INDEX=k SHA256=... (written by prepare.sh)
  NAME=$(sed -n 's/^NAME=//p' "$part/MANIFEST"); PARTS=$(sed -n 's/^PARTS=//p' "$part/MANIFEST")
  SHA256=$(sed -n 's/^SHA256=//p' "$part/MANIFEST")
  if [ -f "$PARTS_DIR/SHA256" ] && [ "$(cat "$PARTS_DIR/SHA256")" != "$SHA256" ]; then
    echo "install.sh: $PARTS_DIR holds parts of another build: starting over"
    rm -rf "$PARTS_DIR"; mkdir -p "$PARTS_DIR"
  fi
  echo "$SHA256" > "$PARTS_DIR/SHA256"; echo "$PARTS" > "$PARTS_DIR/PARTS"; echo "$NAME" > "$PARTS_DIR/NAME"
  if [ -f "$SITE/.vllm-h200-sha256" ] && [ "$(cat "$SITE/.vllm-h200-sha256")" = "$SHA256" ]; then
    echo "install.sh: already installed in $SITE"; show_version; exit 0
  fi
  for f in "$part/$NAME".*; do
    cp "$f" "$PARTS_DIR/.tmp" && mv "$PARTS_DIR/.tmp" "$PARTS_DIR/$(basename "$f")"
    echo "install.sh: have $(basename "$f") ($(stat -c %s "$f") bytes)"
  done
fi

[ -f "$PARTS_DIR/PARTS" ] || { echo "install.sh: no part in $PARTS_DIR yet"; exit 0; }
NAME=$(cat "$PARTS_DIR/NAME"); PARTS=$(cat "$PARTS_DIR/PARTS"); SHA256=$(cat "$PARTS_DIR/SHA256")
missing=()
for i in $(seq 0 $((PARTS - 1))); do
  n=$(printf %02d "$i"); [ -f "$PARTS_DIR/$NAME.$n" ] || missing+=("$n")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: $((PARTS - ${#missing[@]})) of $PARTS parts in $PARTS_DIR; still to carry: ${missing[*]}"
  exit 0
fi

echo "install.sh: all $PARTS parts in; joining"
start=$SECONDS
work=$PARTS_DIR/unpacked
rm -rf "$work"; mkdir -p "$work"
cat $(for i in $(seq 0 $((PARTS - 1))); do printf '%s/%s.%02d ' "$PARTS_DIR" "$NAME" "$i"; done) > "$PARTS_DIR/$NAME"
rm -f "$PARTS_DIR/$NAME".[0-9][0-9]
got=$(sha256sum "$PARTS_DIR/$NAME" | cut -d' ' -f1)
if [ "$got" != "$SHA256" ]; then
  echo "install.sh: sha256 of the joined tar is $got, MANIFEST says $SHA256: parts corrupt or mixed" >&2
  echo "install.sh: removed the parts; carry them all again" >&2
  rm -rf "$PARTS_DIR"; exit 1
fi
tar -xf "$PARTS_DIR/$NAME" -C "$work"
rm -f "$PARTS_DIR/$NAME"
echo "install.sh: sha256 ok ($got), unpacked in $((SECONDS - start)) s"
# Wheels prepare.sh repacked uncompressed and squeezed with xz: decompress them, several at a time.
if compgen -G "$work/wheels/*.whl.xz" >/dev/null; then
  ls "$work"/wheels/*.whl.xz | xargs -P 4 -n 1 xz -d -T 4
  echo "install.sh: xz wheels decompressed at $((SECONDS - start)) s"
fi
( cd "$work/wheels" && sha256sum -c --quiet ../SHA256SUMS ) || { echo "install.sh: a wheel's sha256 is off" >&2; exit 1; }
env -u PYTHONPATH python3 "$here/pick.py" "$work/wheels" > "$work/install.list"
rm -rf "$SITE"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
  $(cat "$work/install.list") > "$work/pip.log" 2>&1 || { cat "$work/pip.log"; exit 1; }
grep -v "^WARNING: Target directory\|^WARNING: Running pip as the .root. user" "$work/pip.log" || true
[ -d "$SITE/vllm" ] || { echo "install.sh: pip did not install vllm into $SITE" >&2; exit 1; }
# --target installs' .pth files are not read from PYTHONPATH: put their paths on it (nvidia-cutlass-dsl's
# nvidia_cutlass_dsl/python_packages holds `cutlass`).
extra=$(awk 1 "$SITE"/*.pth 2>/dev/null | grep -v '^\(import\|#\)' | grep . | sed "s|^|$SITE/|" | paste -sd: - || true)
echo "export PYTHONPATH=$SITE${extra:+:$extra}\${PYTHONPATH:+:\$PYTHONPATH}" > "$ENV_FILE"
echo "install.sh: later calls: . $ENV_FILE   ($(cat "$ENV_FILE"))"
echo "$SHA256" > "$SITE/.vllm-h200-sha256"
rm -rf "$work"
echo "install.sh: $(ls -d "$SITE"/*.dist-info | wc -l) distributions in $SITE, $((SECONDS - start)) s after the join began"
show_version
