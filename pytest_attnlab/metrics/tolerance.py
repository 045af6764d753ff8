"""A test's own regression tolerance per metric: `@pytest.mark.attnlab_gate(tpot="+10%")`, or an experiment
file's `gate: {tpot: "+10%"}`. Recorded in metrics.csv's threshold column ("+10%", where a correctness
row writes its numeric gate), so `compare` and `history` gate that test's metric by it instead of the
run-wide `--threshold`. The sign names the bad direction, `%` makes it relative, as compare's thresholds."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Any

#: a tolerance as written: +10% / -5% (relative) or +0.5 (absolute growth). An absolute drop ("-0.01") is not one:
#: in the threshold column it would read as a correctness row's numeric threshold
TOLERANCE = re.compile(r"^([+-](\d+(\.\d*)?|\.\d+)%|\+(\d+(\.\d*)?|\.\d+))$")
_UNIT_SUFFIX = re.compile(r"_(ms|pct)$")


def names_metric(name: str, metric: str) -> bool:
    """`name` (a metric name, its suffix after '_' such as tok_s for decode_tok_s, or a glob) names `metric`;
    benchmark JSON's unit suffixes (tpot_ms, mbu_pct) are ignored."""
    bare = _UNIT_SUFFIX.sub("", metric)
    return any(m == name or m.endswith("_" + name) or fnmatch.fnmatchcase(m, name) for m in (metric, bare))


def parse(tolerances: Mapping[str, Any], where: str) -> dict[str, str]:
    """Validated {metric name: tolerance}; a bad one raises ValueError naming `where` and the format."""
    out = {}
    for name, value in tolerances.items():
        text = str(value).strip()
        if not isinstance(name, str) or not name or not TOLERANCE.match(text):
            raise ValueError(
                f"{where}: bad tolerance {name}={value!r}; expected METRIC='+N%' (worse when it grows by more "
                "than N %), '-N%' (worse when it drops by more than N %) or an absolute growth '+N', e.g. tpot='+10%'"
            )
        out[name] = text
    return out


def pick(tolerances: Mapping[str, str], metric: str) -> str:
    """The tolerance that names `metric` exactly, else the first that matches it; "" for none."""
    if metric in tolerances:
        return tolerances[metric]
    return next((t for name, t in tolerances.items() if names_metric(name, metric)), "")
