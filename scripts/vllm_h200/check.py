#!/usr/bin/env python3
"""Here, offline: is the carried set closed? Run under Python 3.12 (prepare.sh --check does).

    python3.12 check.py WHEEL_DIR WHEELS_TXT

A throw-away venv gets stubs for the image (resolve.IMAGE) and for the CUDA toolkit wheels that
wheels.txt lists as left out, then `pip install --dry-run --no-index --find-links WHEEL_DIR vllm==...`
must resolve with no index at all and want exactly the wheels in wheels.txt, no more and no fewer.
"""

import json
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import resolve  # noqa: E402


def main():
    wheel_dir, listing = sys.argv[1], sys.argv[2]
    pinned, left_out, root = {}, {}, None
    for line in open(listing):
        m = re.match(r"^([A-Za-z0-9._-]+)==(\S+) --hash=", line)
        if m:
            pinned[m.group(1)] = m.group(2)
        m = re.match(r"^# left out .*: ([A-Za-z0-9._-]+)==(\S+)$", line.strip())
        if m:
            left_out[m.group(1)] = m.group(2)
    root = "vllm==" + pinned["vllm"]
    work = tempfile.mkdtemp(prefix="vllm-check-")
    try:
        venv = os.path.join(work, "venv")
        resolve.run([sys.executable, "-m", "venv", venv])
        py = os.path.join(venv, "bin", "python")
        resolve.run([py, "-m", "pip", "install", "-q", "--upgrade", "pip>=25"])
        stubs = dict(resolve.IMAGE)
        stubs.update(left_out)
        paths = [resolve.stub_wheel(n, v, work) for n, v in sorted(stubs.items())]
        resolve.run([py, "-m", "pip", "install", "-q", "--no-index", "--no-deps"] + paths)
        report = os.path.join(work, "report.json")
        resolve.run(
            [py, "-m", "pip", "install", "--dry-run", "-q", "--no-index", "--find-links", wheel_dir, "--report", report]
            + resolve.PLATFORM_ARGS
            + [root]
        )
        with open(report) as f:
            got = {resolve.canon(i["metadata"]["name"]): i["metadata"]["version"] for i in json.load(f)["install"]}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    extra = sorted(set(got) - set(pinned))
    unused = sorted(set(pinned) - set(got))
    differ = sorted(n for n in set(got) & set(pinned) if got[n] != pinned[n])
    print(
        f"check: offline resolve of {root} against the image stubs + {os.path.basename(listing)}: "
        f"{len(got)} wheels wanted, {len(pinned)} pinned"
    )
    if left_out:
        stubbed = " ".join(f"{n}=={v}" for n, v in sorted(left_out.items()))
        print(f"check: stubbed as left out (CUDA toolkit / torch): {stubbed}")
    for what, names in (("wanted but not pinned", extra), ("pinned but not wanted", unused), ("other version", differ)):
        if names:
            print("check: {}: {}".format(what, " ".join(names)))
    if extra or unused or differ:
        sys.exit(1)
    print("check: ok: the set is closed")


if __name__ == "__main__":
    main()
