#!/usr/bin/env bash
# Here (with PyPI): make the parts that carry vLLM and the wheels it needs to the lent H200 (no network).
#   scripts/vllm_h200/prepare.sh              download exactly the wheels in wheels.txt (pip, --require-hashes)
#   scripts/vllm_h200/prepare.sh --resolve    resolve them again first (needs a Python 3.12), rewriting wheels.txt
# then pack them into one tar, split it into parts of at most $PART_BYTES (55 MB) under .device/vllm/part-NN/
# (git-ignored), each part a folder of its own with a MANIFEST, so that each device call carries one folder
# and runs `bash scripts/vllm_h200/install.sh .device/vllm/part-NN` (README.md beside this).
# Environment (optional):
#   VLLM_H200_SKIP   wheel names to leave out of the tar (e.g. "flashinfer-cubin pynvvideocodec")
#   VLLM_H200_XZ     wheel names repacked uncompressed and xz'd (default: the big ones xz shrinks well:
#                    flashinfer-cubin, vllm, ... see XZ_DEFAULT); "" for none
#   XZ_LEVEL         xz preset (default 6); XZ_THREADS (default: all cores)
#   PART_BYTES       largest part (default 55000000)
#   PY312            a Python 3.12 for --resolve (default: python3.12 on PATH, else pyenv's)
set -euo pipefail
cd "$(dirname "$0")/../.."
here=scripts/vllm_h200
OUTD=.device/vllm
WHEELS=$OUTD/wheels
NAME=vllm-h200.tar
PART_BYTES=${PART_BYTES:-55000000}
# Wheels that xz shrinks by 10 MB or more once repacked uncompressed (flashinfer-cubin 458 -> 97 MB; vllm
# 250 -> 178 MB): about 4 GB to compress, 20-30 min on 2 cores, once (cached by hash in .device/vllm/xz-cache).
XZ_DEFAULT="flashinfer-cubin vllm tokenspeed-triton nvidia-cutlass-dsl-libs-cu13 nvidia-cutlass-dsl-libs-base
 tilelang xgrammar opencv-python-headless flashinfer-python numpy z3-solver"
XZ_LIST=${VLLM_H200_XZ-$XZ_DEFAULT}
SKIP_LIST=${VLLM_H200_SKIP:-}
mkdir -p "$WHEELS" "$OUTD/xz-cache"

platform_args=(--python-version 3.12 --implementation cp --only-binary=:all:)
for n in $(seq 39 -1 17); do platform_args+=(--platform "manylinux_2_${n}_x86_64"); done
platform_args+=(--platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64
                --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64)

if [ "${1:-}" = --resolve ]; then
  py=${PY312:-$(command -v python3.12 || true)}
  if [ -z "$py" ] && command -v pyenv >/dev/null; then
    v=$(pyenv versions --bare | grep -E '^3\.12(\.|$)' | tail -1 || true)
    [ -n "$v" ] && py=$(pyenv root)/versions/$v/bin/python3
  fi
  [ -n "$py" ] && [ -x "$py" ] || { echo "prepare.sh: --resolve needs a Python 3.12 (set PY312)" >&2; exit 2; }
  "$py" "$here/resolve.py" "$WHEELS" "$here/wheels.txt"
else
  # The pinned set, hash-checked; files already in $WHEELS with the right hash are not fetched again.
  PIP_CONSTRAINT= python3 -m pip download -q --no-deps --require-hashes -d "$WHEELS" "${platform_args[@]}" \
    -r "$here/wheels.txt"
fi

# Build the payload: wheels/ (as downloaded, or repacked uncompressed and xz'd), SHA256SUMS of the wheels as
# install.sh will see them, and wheels.txt. Check every wheel against wheels.txt on the way.
payload=$OUTD/payload
rm -rf "$payload"; mkdir -p "$payload/wheels"
python3 - "$here/wheels.txt" "$WHEELS" "$payload" "$OUTD/xz-cache" "${XZ_LEVEL:-6}" "${XZ_THREADS:-0}" \
  "$XZ_LIST" "$SKIP_LIST" <<'PY'
import hashlib, os, re, shutil, subprocess, sys, zipfile
listing, wheels, payload, cache, level, threads, xz_names, skip_names = sys.argv[1:9]
xz_names, skip_names = set(xz_names.split()), set(skip_names.split())

def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()

sums, kept, skipped = [], 0, []
for line in open(listing):
    m = re.match(r"^([A-Za-z0-9._-]+)==(\S+) --hash=sha256:([0-9a-f]{64})\s+#\s+(\d+)\s+(\S+)", line)
    if not m:
        continue
    name, version, digest, size, fname = m.groups()
    src = os.path.join(wheels, fname)
    if not os.path.exists(src) or os.path.getsize(src) != int(size) or sha(src) != digest:
        sys.exit("prepare.sh: %s missing or not the one in wheels.txt" % src)
    if name in skip_names:
        skipped.append(name)
        continue
    kept += 1
    if name not in xz_names:
        os.link(src, os.path.join(payload, "wheels", fname))
        sums.append((digest, fname))
        continue
    # Repack uncompressed (same members, same order) so that xz sees the raw bytes, and cache by hash.
    cached = os.path.join(cache, digest + ".xz")
    stored_sha_file = os.path.join(cache, digest + ".sha256")
    if not (os.path.exists(cached) and os.path.exists(stored_sha_file)):
        tmp = os.path.join(cache, fname)
        with zipfile.ZipFile(src) as zi, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zo:
            for info in zi.infolist():
                out = zipfile.ZipInfo(info.filename, info.date_time)
                out.external_attr = info.external_attr
                zo.writestr(out, zi.read(info), zipfile.ZIP_STORED)
        stored_sha = sha(tmp)
        print("prepare.sh: xz -%s %s (%.0f MB uncompressed)..." % (level, fname, os.path.getsize(tmp) / 1e6),
              flush=True)
        subprocess.run(["nice", "-n", "10", "xz", "-%s" % level, "-T%s" % threads, "-f", tmp], check=True)
        os.replace(tmp + ".xz", cached)
        open(stored_sha_file, "w").write(stored_sha + "\n")
    os.link(cached, os.path.join(payload, "wheels", fname + ".xz"))
    sums.append((open(stored_sha_file).read().strip(), fname))
    print("prepare.sh: %s: %.1f MB as downloaded, %.1f MB xz'd" % (
        fname, int(size) / 1e6, os.path.getsize(cached) / 1e6), flush=True)
with open(os.path.join(payload, "SHA256SUMS"), "w") as f:
    for digest, fname in sums:
        f.write("%s  %s\n" % (digest, fname))
shutil.copy(listing, os.path.join(payload, "wheels.txt"))
print("prepare.sh: %d wheels in the payload%s" % (kept, "; left out: " + " ".join(skipped) if skipped else ""))
PY

# One tar (fixed order and owner, so the same inputs give the same bytes), its hash, its parts.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$OUTD/$NAME" -C "$payload" .
sha=$(sha256sum "$OUTD/$NAME" | cut -d' ' -f1)
echo "$sha  $NAME" > "$OUTD/SHA256"
rm -rf "$OUTD"/part-[0-9][0-9] "$OUTD/split"
mkdir -p "$OUTD/split"
split -b "$PART_BYTES" -d -a 2 "$OUTD/$NAME" "$OUTD/split/$NAME."
parts=$(ls "$OUTD/split" | wc -l)
for f in "$OUTD"/split/*; do
  i=${f##*.}
  mkdir -p "$OUTD/part-$i"
  mv "$f" "$OUTD/part-$i/"
  printf 'NAME=%s\nPARTS=%d\nINDEX=%d\nSHA256=%s\n' "$NAME" "$parts" "$((10#$i))" "$sha" > "$OUTD/part-$i/MANIFEST"
done
rmdir "$OUTD/split"
rm -f "$OUTD/$NAME"
rm -rf "$payload"
total=$(du -cb "$OUTD"/part-*/"$NAME".* | tail -1 | cut -f1)
echo "prepare.sh: $parts parts, $total bytes ($((total / 1000000)) MB) in all, tar sha256 $sha"
for d in "$OUTD"/part-*; do echo "  $d: $(stat -c %s "$d/$NAME".*) bytes"; done
echo "prepare.sh: now, on the H200, one call per part, each within 30 s of the last (README.md):"
for d in "$OUTD"/part-*; do echo "  carry [\"$d\"]  command: bash scripts/vllm_h200/install.sh $d"; done
