"""Recording a real upstream butler: `ledger.lsst.RecordingButler` against the bare butler.

Per call (``get``, ``stored``, ``put``) at ``normal`` durability, upstream's
``QuantumBackedButler`` bare and wrapped, timed side by side call by call in
one process (``upstream_wrapper.py``, run in a subprocess because it needs
the ``lsst`` extra). Target (issue 12): the wrapped call at most 1.10x the
bare one.

Usage::

    python benchmarks/bench_lsst.py            # these figures only, into RESULTS.md
    python benchmarks/bench_lsst.py --quick    # fewer rounds, printed only

Only this section of ``RESULTS.md`` is replaced (between its markers); a full
``run.py`` writes it too.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Figure, machine, versions

__all__ = ["SECTION_END", "SECTION_START", "lsst_figures", "lsst_section"]

HERE = Path(__file__).resolve().parent
SECTION_START = "<!-- section:lsst-wrapper -->"
SECTION_END = "<!-- /section:lsst-wrapper -->"
_KINDS = ("get", "stored", "put")

_METHOD = """\
Both butlers are upstream's `QuantumBackedButler` over one repository and the
same 100 `StructuredDataDict` inputs, each quantum with its own outputs; one
is wrapped in `RecordingButler` with a ledger file at `normal` (every call
committed before it returns). The bare and the wrapped call of a kind are
timed call by call in rotation (`common.timed_rounds`: the cyclic garbage
collector off, a different one first each call), means over every call.
*Append alone* is the ledger's append for one call timed in the same rounds:
the part of the difference that is the durable record itself; *the wrapper
over a butler that answers at once* is a `RecordingButler` (with its own
ledger at `normal`) whose upstream `get`/`stored` return immediately: its
whole cost, recording included, without upstream's work. What the
side-by-side difference shows beyond that is the upstream call slowed by
what the commit did just before (caches, the WAL's write). Other
engineers share this 2-core machine: differences of a few per cent are within
the noise of one run."""


def lsst_figures(tmp: Path, quick: bool) -> tuple[list[Figure], dict[str, float] | None, str]:
    """The three per-call figures (or why there are none), and the raw means in µs."""
    rounds, per_round = (5, 30) if quick else (20, 50)
    if importlib.util.find_spec("lsst.daf.butler") is None:
        return [], None, "lsst-daf-butler is not installed (pip install -e '.[lsst]')"
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "upstream_wrapper.py"),
            str(tmp / "wrapper"),
            str(rounds),
            str(per_round),
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return [], None, f"the upstream run failed: {last}"
    means: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    append = means["append/alone"]
    intrinsic = {k: means.get(f"intrinsic/{k}") for k in ("get", "stored")}
    figures = []
    for kind in _KINDS:
        bare, wrapped = means[f"{kind}/bare"], means[f"{kind}/wrapped"]
        figures.append(
            Figure(
                "lsst",
                f"{kind}, normal: upstream butler wrapped in RecordingButler",
                wrapped,
                "µs",
                bare,
                "the same upstream QuantumBackedButler call, bare",
                "≤ 1.10x",
                limit=1.10,
                note=f"+{wrapped - bare:.0f} µs a call; the ledger's append alone "
                f"{append:.0f} µs"
                + (
                    f"; the wrapper over a butler that answers at once {intrinsic[kind]:.0f} µs "
                    f"({intrinsic[kind] / bare:.1%} of the bare call)"
                    if intrinsic.get(kind)
                    else ""
                )
                + f"; {rounds} rounds of {per_round} calls",
                why="what remains is the ledger's durable append (committed before the call "
                "returns, a write of the WAL) and its effect on the caches of the upstream "
                "call that follows; the wrapper's own Python is a few µs",
            )
        )
    return figures, means, ""


def lsst_section(figures: list[Figure], why_none: str, when: str, where: str) -> str:
    """The Markdown section, between its markers."""
    from run import misses, render  # run.py imports this module: import it lazily

    body = render(figures) if figures else f"Not measured: {why_none}."
    met = [f.met for f in figures if f.met is not None]
    summary = f"{sum(met)} of {len(met)} targets met." if met else ""
    return (
        f"{SECTION_START}\n## Recording a real upstream butler (`ledger.lsst`)\n\n"
        f"Measured {when}; {where}.\n\n{body}\n\n{summary}\n\n"
        + (misses(figures) + "\n\n" if met and not all(met) else "")
        + f"{_METHOD}\n{SECTION_END}\n"
    )


def replace_section(text: str, section: str) -> str:
    """``text`` with its lsst-wrapper section replaced by ``section`` (or it appended)."""
    if SECTION_START in text and SECTION_END in text:
        before = text[: text.index(SECTION_START)]
        after = text[text.index(SECTION_END) + len(SECTION_END) :].lstrip("\n")
        return before + section + ("\n" + after if after else "")
    return text.rstrip("\n") + "\n\n" + section


def main() -> None:
    """Measure, print, and (unless --quick) replace this section of RESULTS.md."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds; RESULTS.md untouched")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qledger-bench-lsst-") as d:
        tmp = Path(d)
        figures, _, why_none = lsst_figures(tmp, args.quick)
        where = machine(tmp)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = lsst_section(
        figures,
        why_none,
        f"{when} ({time.perf_counter() - started:.0f} s)",
        f"{where}; {versions()}",
    )
    print(section)
    if not args.quick:
        previous = args.output.read_text() if args.output.exists() else "# Benchmark results\n"
        args.output.write_text(replace_section(previous, section))
        print(f"wrote the section into {args.output}")


if __name__ == "__main__":
    main()
