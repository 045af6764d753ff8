#!/usr/bin/env python3
"""On the H200: choose which of the carried wheels to install, leaving out those the image already holds.

    python3 pick.py WHEEL_DIR > list        (run with the image's python3 and no PYTHONPATH)

Prints the wheel paths to install, one a line; says on stderr what it left out and why, and which
requirements stay unmet. A carried package is left out when the image holds it at a version that meets
every requirement on it from what gets installed, and the image's copy in turn is content with the
versions that get installed (e.g. the image's pydantic with its own pydantic-core): repeated until
nothing changes. Whatever gets installed goes first on PYTHONPATH, so a wheel left out here is one
package less shadowing the image's.
"""

import email.parser
import glob
import importlib.metadata as md
import os
import sys
import zipfile

try:
    from packaging.requirements import Requirement
    from packaging.version import Version
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.version import Version


def canon(name):
    return name.lower().replace("_", "-").replace(".", "-")


def reqs_of(lines, extras=()):
    out = []
    for line in lines or []:
        try:
            r = Requirement(line)
        except Exception:
            continue
        if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in ("",) + tuple(extras)):
            out.append(r)
    return out


def ok(req, version):
    try:
        return req.specifier.contains(Version(version), prereleases=True)
    except Exception:
        return True  # a version packaging cannot parse: do not fight over it


def main():
    folder = sys.argv[1]
    ours = {}  # name -> [version, requires lines, path]
    for path in sorted(glob.glob(os.path.join(folder, "*.whl"))):
        with zipfile.ZipFile(path) as z:
            meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
            meta = email.parser.Parser().parsestr(z.read(meta_name).decode("utf-8", "replace"))
        ours[canon(meta["Name"])] = [meta["Version"], meta.get_all("Requires-Dist") or [], path]
    image = {}
    for dist in md.distributions():
        name = canon(dist.metadata["Name"] or "")
        if name and name not in image:  # first on sys.path wins, as for imports
            image[name] = [dist.version, dist.requires or []]
    # Extras asked for along the way (fastapi[standard], nvidia-cutlass-dsl[cu13], ...).
    extras = {n: set() for n in ours}
    for _ in range(3):
        for n, (_, lines, _) in ours.items():
            for r in reqs_of(lines, extras[n]):
                if canon(r.name) in extras:
                    extras[canon(r.name)] |= set(r.extras)
    skip = {n for n in ours if n in image}
    why = {}
    changed = True
    while changed:
        changed = False
        for p in sorted(ours.keys() | skip):
            if p in skip:
                p_reqs, p_from = reqs_of(image[p][1]), f"image {p} {image[p][0]}"
            else:
                p_reqs, p_from = reqs_of(ours[p][1], extras[p]), f"{p} {ours[p][0]}"
            for r in p_reqs:
                t = canon(r.name)
                if t in skip and not ok(r, image[t][0]):
                    skip.discard(t)
                    why[t] = f"image has {image[t][0]}, {p_from} needs {r.specifier}"
                    changed = True
                elif p in skip and t in ours and t not in skip and not ok(r, ours[t][0]):
                    skip.discard(p)
                    why[p] = f"image's copy needs {t}{r.specifier}, carried {ours[t][0]}"
                    changed = True
    install = sorted(n for n in ours if n not in skip)
    for n in sorted(skip):
        print(f"pick: image has {n} {image[n][0]} (carried {ours[n][0]}): left out", file=sys.stderr)
    for n in install:
        if n in why:
            print(f"pick: installing {n} {ours[n][0]} over the image's: {why[n]}", file=sys.stderr)
    # What stays unmet once installed: for the record (extras of heavy CUDA toolkits, say).
    visible = {n: v[0] for n, v in image.items()}
    visible.update({n: ours[n][0] for n in install})
    for p in install:
        for r in reqs_of(ours[p][1], extras[p]):
            t = canon(r.name)
            if t not in visible:
                print(f"pick: unmet: {p} {ours[p][0]} needs {r} (absent)", file=sys.stderr)
            elif not ok(r, visible[t]):
                print(f"pick: unmet: {p} {ours[p][0]} needs {r}, visible {visible[t]}", file=sys.stderr)
    print(f"pick: {len(install)} of {len(ours)} carried wheels to install", file=sys.stderr)
    for n in install:
        print(ours[n][2])


if __name__ == "__main__":
    main()
