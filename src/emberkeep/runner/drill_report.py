"""A drill's report: Markdown for people, JSON beside it for tools."""

from __future__ import annotations

import json
from pathlib import Path

from ..fsutil import write_atomic
from .kinds import DrillResult


def write_report(path: Path, results: list[DrillResult]) -> list[Path]:
    """``path`` (Markdown) and ``path`` with ``.json``; both written atomically."""
    md = path if path.suffix == ".md" else path.with_name(path.name + ".md")
    data = json.dumps([r.to_json() for r in results], indent=1).encode() + b"\n"
    write_atomic(md, render_markdown(results).encode(), mode=0o644)
    write_atomic(md.with_suffix(".json"), data, mode=0o644)
    return [md, md.with_suffix(".json")]


def render_markdown(results: list[DrillResult]) -> str:
    lines = ["# Restore drill report", ""]
    for r in results:
        outcome = "PASSED" if r.passed else "FAILED"
        lines += [
            f"## {r.source} ({r.source_type}): {outcome}",
            "",
            f"- Snapshot: `{r.snapshot[:12]}` taken {r.snapshot_time}, from target `{r.target}`",
            f"- Drill started: {r.started}; {r.bytes} bytes restored",
            f"- Measured RTO: {r.rto_seconds:.1f} s{_objective(r)}",
        ]
        if r.error:
            lines.append(f"- Error: {r.error}")
        if r.first_difference:
            lines.append(f"- First difference: {r.first_difference}")
        lines += ["", "| Phase | Seconds |", "|---|---|"]
        lines += [f"| {name} | {secs:.3f} |" for name, secs in r.phases.items()]
        if r.checked:
            keys = list(dict.fromkeys(k for row in r.checked for k in row))
            lines += ["", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            for row in r.checked:
                lines.append("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")
        lines.append("")
    return "\n".join(lines)


def _objective(r: DrillResult) -> str:
    if r.rto_objective_seconds is None:
        return " (no RTO objective set)"
    verdict = "within" if r.rto_ok else "OVER"
    return f", {verdict} the objective of {r.rto_objective_seconds:.0f} s"
