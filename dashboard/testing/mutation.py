"""Mutation score per module from mutmut's results (``make mutate``; docs/testing.md).

``python -m dashboard.testing.mutation`` reads ``mutmut results --all true`` (lines ``    <mutant>: <status>``)
and prints, per mutated module, the killed share and the mutants that survived (survived, no tests,
suspicious), so each can be killed by a test or listed in docs/testing.md as equivalent.
"""
from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict

KILLED = {"killed", "timeout", "caught by type check", "segfault"}
SURVIVED = {"survived", "no tests", "suspicious"}


def parse_results(text: str) -> dict[str, dict[str, str]]:
    """{module: {mutant name: status}} from ``mutmut results --all true`` output."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for line in text.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if not sep or "__mutmut_" not in name:
            continue
        module = name.split("__mutmut_")[0].rsplit(".", 1)[0]
        out[module][name] = status.strip()
    return dict(out)


def score_lines(results: dict[str, dict[str, str]]) -> list[str]:
    """One line per module (killed / counted, score) then its survivors, and a total line."""
    lines, total = [], Counter()
    for module in sorted(results):
        counts = Counter(results[module].values())
        killed = sum(counts[s] for s in KILLED)
        counted = killed + sum(counts[s] for s in SURVIVED)
        total.update(killed=killed, counted=counted)
        pct = f"{100 * killed / counted:.1f} %" if counted else "n/a"
        lines.append(f"{module}: {killed}/{counted} killed ({pct}); " + ", ".join(
            f"{k} {v}" for k, v in sorted(counts.items())))
        lines += [f"    survived: {m} ({s})" for m, s in sorted(results[module].items()) if s in SURVIVED]
    if total["counted"]:
        lines.append(f"TOTAL: {total['killed']}/{total['counted']} killed "
                     f"({100 * total['killed'] / total['counted']:.1f} %)")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    mutmut = argv[0] if argv else "mutmut"
    text = subprocess.run([mutmut, "results", "--all", "true"], capture_output=True, text=True, check=True).stdout
    print("\n".join(score_lines(parse_results(text))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
