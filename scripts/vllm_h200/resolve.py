#!/usr/bin/env python3
"""Resolve the wheels vLLM needs on the lent H200 beyond what its image holds; write wheels.txt.

Run by `prepare.sh --resolve`. Standalone (under Python 3.12, the H200 image's minor version, so that
markers such as `python_version > "3.11"` come out as they will there):

    python3.12 resolve.py WHEEL_DIR OUT_LIST [REQ ...]      (default REQ: vllm==0.25.1)

How: a throw-away venv gets dependency-free stub wheels for what the H200 image is known to hold
(IMAGE below: torch 2.11.0 and friends, numpy, transformers...), then pip's own resolver runs there as
`pip install --dry-run --report` for Linux x86-64 CPython 3.12, manylinux 2_5..2_39, binary wheels
only. pip keeps an installed stub whenever its version meets every requirement on it (so what the image
holds does not travel, and nothing torch needs is reached through the stubs) and picks a real wheel
where it does not (numpy: mistral-common and numba cap it below the image's 2.5.2). NEVER_TRAVEL names
that the report still holds are left out and listed. The rest is downloaded with
`pip download --no-deps` and written to OUT_LIST with sha256 and size, so that
`pip download --no-deps --require-hashes -r OUT_LIST` repeats it (prepare.sh does that).
"""

import base64
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

# /work/.library/device/KINDS.md, nvidia-h200, "pip list, as a session saw it" (2026-11): python3 is
# 3.12.3 with these. torch's own CUDA wheels (nvidia-*-cu13, cuda-toolkit) and triton come with torch.
IMAGE = {
    "torch": "2.11.0",
    "torchvision": "0.26.0",
    "torchaudio": "2.11.0",
    "triton": "3.6.0",
    "numpy": "2.5.2",
    "transformers": "5.17.0",
    "tokenizers": "0.23.2",
    "safetensors": "0.8.0",
    "huggingface-hub": "1.33.0",
    "sentencepiece": "0.2.2",
    "tiktoken": "0.14.0",
    "accelerate": "1.15.0",
    "cupy-cuda13x": "14.2.0",
    "jax": "0.11.2",
    "jaxlib": "0.11.2",
    "onnx": "1.23.1",
    "onnxruntime": "1.30.0",
    "sentence-transformers": "6.0.1",
    "torchmetrics": "1.9.0",
    "pytorch-lightning": "2.6.6",
    "torch-geometric": "2.8.0.post1",
}
# Never downloaded, whatever the report says, and listed in wheels.txt as left out:
# - torch, torchvision, torchaudio, triton: the image's (torch 2.11.0+cu130);
# - CUDA toolkit wheels (cuda-toolkit, nvidia-cuda-*, nvidia-cublas, ...): the image holds CUDA 13.0, the
#   one its driver (580) runs: torch's own cuda-toolkit 13.0.2 wheels and /usr/local/cuda (nvcc 13.0).
#   What the report asks for here (cuda-tile[tileiras] -> cuda-toolkit[nvcc,nvvm,tileiras]>=13.2 from
#   flashinfer, humming-kernels[cu13] -> nvidia-cuda-nvcc/-cccl/-nvrtc/-runtime) is 13.4/13.5: code its
#   compilers emit would not load on a 13.0 driver, and the libraries would shadow torch's.
NEVER_TRAVEL = {"torch", "torchvision", "torchaudio", "triton", "cuda-toolkit"}
NEVER_TRAVEL_PREFIX = (
    "nvidia-cuda-",
    "nvidia-cublas",
    "nvidia-cufft",
    "nvidia-cufile",
    "nvidia-curand",
    "nvidia-cusolver",
    "nvidia-cusparse",
    "nvidia-nvjitlink",
    "nvidia-nvtx",
    "nvidia-cudnn-cu",
    "nvidia-nccl-cu",
    "nvidia-nvshmem-cu",
    "nvidia-nvvm",
    "nvidia-nvfatbin",
    "nvidia-npp",
    "nvidia-nvjpeg",
)
PLATFORM_ARGS = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:"]
for _n in range(39, 16, -1):
    PLATFORM_ARGS += ["--platform", f"manylinux_2_{_n}_x86_64"]
PLATFORM_ARGS += [
    "--platform",
    "manylinux2014_x86_64",
    "--platform",
    "manylinux_2_12_x86_64",
    "--platform",
    "manylinux2010_x86_64",
    "--platform",
    "manylinux_2_5_x86_64",
    "--platform",
    "manylinux1_x86_64",
]


def canon(name):
    return name.lower().replace("_", "-").replace(".", "-")


def never_travel(name):
    return name in NEVER_TRAVEL or name.startswith(NEVER_TRAVEL_PREFIX)


def stub_wheel(name, version, folder):
    dist = name.replace("-", "_")
    di = f"{dist}-{version}.dist-info"
    files = {
        di + "/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        di + "/WHEEL": "Wheel-Version: 1.0\nGenerator: resolve.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = ""
    for k, v in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b"=").decode()
        record += f"{k},sha256={digest},{len(v)}\n"
    files[di + "/RECORD"] = record + di + "/RECORD,,\n"
    path = os.path.join(folder, f"{dist}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
    return path


def header(roots):
    image = ", ".join(f"{n} {v}" for n, v in sorted(IMAGE.items()))
    return (
        f"# {' '.join(roots)} for the lent H200 (CPython 3.12, Linux x86-64, manylinux 2_5..2_39): the\n"
        "# wheels beyond the image. Written by scripts/vllm_h200/prepare.sh --resolve (resolve.py);\n"
        "# prepare.sh without --resolve downloads exactly these (pip --require-hashes).\n"
        "# Stubbed as the image's for the resolve (pip replaced a stub only where its version did not fit,\n"
        f"# as numpy's): {image}.\n"
        "# Each line: name==version --hash=sha256:...  # size_bytes wheel_file\n"
    )


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(cmd, **kw):
    print("resolve: $ " + " ".join(a for a in cmd if not a.startswith("manylinux")), flush=True)
    env = dict(os.environ, PIP_CONSTRAINT="", PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run(cmd, check=True, env=env, **kw)


def main():
    if sys.version_info[:2] != (3, 12):
        sys.exit("resolve: run me under Python 3.12 (the H200 image's), not {}.{}".format(*sys.version_info[:2]))
    wheel_dir, out_list = sys.argv[1], sys.argv[2]
    roots = sys.argv[3:] or ["vllm==0.25.1"]
    os.makedirs(wheel_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="vllm-resolve-")
    try:
        venv = os.path.join(work, "venv")
        run([sys.executable, "-m", "venv", venv])
        py = os.path.join(venv, "bin", "python")
        # pip >= 24 lets --platform go with --dry-run (and keeps the installed stubs in play).
        run([py, "-m", "pip", "install", "-q", "--upgrade", "pip>=25"])
        stubs = [stub_wheel(n, v, work) for n, v in sorted(IMAGE.items())]
        run([py, "-m", "pip", "install", "-q", "--no-index", "--no-deps"] + stubs)
        report = os.path.join(work, "report.json")
        run([py, "-m", "pip", "install", "--dry-run", "-q", "--report", report] + PLATFORM_ARGS + roots)
        with open(report) as f:
            items = json.load(f)["install"]
        travel, left_out = [], []
        for it in items:
            name, version = canon(it["metadata"]["name"]), it["metadata"]["version"]
            (left_out if never_travel(name) else travel).append((name, version))
        # Download exactly those, one pip call; then check that each wheel is the one chosen.
        wanted = set(travel)
        for old in glob.glob(os.path.join(wheel_dir, "*.whl")):  # keep what is still wanted: pip skips it
            dist, version = os.path.basename(old).split("-")[:2]
            if (canon(dist), version) not in wanted:
                os.remove(old)
        run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", wheel_dir]
            + PLATFORM_ARGS
            + ["{}=={}".format(*nv) for nv in travel]
        )
        files = {}
        for path in glob.glob(os.path.join(wheel_dir, "*.whl")):
            dist, version = os.path.basename(path).split("-")[:2]
            files[canon(dist)] = (version, path)
        missing = [n for n, _ in travel if n not in files]
        if missing:
            sys.exit("resolve: pip download did not bring " + " ".join(missing))
        total = 0
        with open(out_list, "w") as f:
            f.write(header(roots))
            for name, version in sorted(travel):
                path = files[name][1]
                size = os.path.getsize(path)
                total += size
                f.write(f"{name}=={version} --hash=sha256:{sha256(path)}  # {size} {os.path.basename(path)}\n")
            f.write(f"# total: {len(travel)} wheels, {total} bytes\n")
            for name, version in sorted(left_out):
                f.write(f"# left out (torch / CUDA toolkit: the image's, see resolve.py): {name}=={version}\n")
        dropped = "; left out: " + " ".join(f"{n}=={v}" for n, v in left_out) if left_out else ""
        print(f"resolve: {len(travel)} wheels, {total / 1e6:.1f} MB -> {out_list}{dropped}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
