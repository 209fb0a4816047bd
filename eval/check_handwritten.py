#!/usr/bin/env python3
"""Validate eval/handwritten.jsonl against codetether_tools.json and print counts.

Usage: python3 eval/check_handwritten.py [--markdown]
Exits non-zero if any check fails. Standard library only.
"""
import json
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "handwritten.jsonl"
TOOLS = HERE.parent / "codetether_tools.json"

STYLES = {"typed", "spoken", "terse", "long", "polite", "function-like", "colon-form"}
KINDS = {"single", "multi", "same-tool-twice", "no-call", "offtopic", "smalltalk", "thanks",
         "retraction", "unsupported-action", "missing-argument", "synonym", "priority-words",
         "global", "quoted"}
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
HEX8_RE = re.compile(r"^[0-9a-f]{8}$")
NORM_RE = re.compile(r"[\s,./\-_*^]")


def norm(s):
    return NORM_RE.sub("", s.lower())


def main():
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in json.loads(TOOLS.read_text())}
    errors = []
    rows = []
    for n, line in enumerate(DATA.read_text().splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            errors.append(f"line {n}: bad JSON: {e}")
    ids = Counter(r.get("id") for r in rows)
    errors += [f"duplicate id {i}" for i, c in ids.items() if c > 1]
    uuid_seen = Counter()

    for r in rows:
        rid = r.get("id")
        if set(r) != {"id", "query", "calls", "tags"}:
            errors.append(f"{rid}: keys {sorted(r)}")
        q = r["query"]
        tags = r["tags"]
        styles = [t for t in tags if t in STYLES]
        if len(styles) != 1:
            errors.append(f"{rid}: needs exactly one style tag, has {styles}")
        for t in tags:
            if t not in STYLES and t not in KINDS and t not in tools:
                errors.append(f"{rid}: unknown tag {t}")
        calls = r["calls"]
        if not calls and "no-call" not in tags:
            errors.append(f"{rid}: empty calls but no no-call tag")
        if calls and "no-call" in tags:
            errors.append(f"{rid}: no-call tag with calls")
        if len(calls) == 1 and "single" not in tags:
            errors.append(f"{rid}: one call but no single tag")
        if len(calls) > 1 and "multi" not in tags:
            errors.append(f"{rid}: several calls but no multi tag")
        names = [c["name"] for c in calls]
        if len(names) != len(set(names)) and "same-tool-twice" not in tags:
            errors.append(f"{rid}: repeated tool without same-tool-twice tag")
        for name in set(names):
            if name not in tags:
                errors.append(f"{rid}: tool {name} missing from tags")
        uuids_here = set()
        for c in calls:
            if c["name"] not in tools:
                errors.append(f"{rid}: unknown tool {c['name']}")
                continue
            schema = tools[c["name"]]
            props = schema.get("properties", {})
            for req in schema.get("required", []):
                if req not in c["arguments"]:
                    errors.append(f"{rid}: {c['name']} lacks required {req}")
            for arg, vals in c["arguments"].items():
                if arg not in props:
                    errors.append(f"{rid}: {c['name']} has no argument {arg}")
                    continue
                if not isinstance(vals, list) or not vals:
                    errors.append(f"{rid}: {arg} must be a non-empty list")
                    continue
                p = props[arg]
                normed = [norm(v) for v in vals if isinstance(v, str)]
                if len(normed) != len(set(normed)):
                    errors.append(f"{rid}: {arg} has variants equal after normalisation")
                for v in vals:
                    if p["type"] == "integer":
                        if not (isinstance(v, int) and not isinstance(v, bool)
                                and p.get("minimum", -1e9) <= v <= p.get("maximum", 1e9)):
                            errors.append(f"{rid}: bad integer {arg}={v!r}")
                        continue
                    if not isinstance(v, str) or not v.strip():
                        errors.append(f"{rid}: bad string {arg}={v!r}")
                        continue
                    if "enum" in p and v not in p["enum"]:
                        errors.append(f"{rid}: {arg}={v!r} not in enum")
                    if arg in ("task_id", "session_id"):
                        if not UUID_RE.match(v):
                            errors.append(f"{rid}: {arg} not a lower-case UUID: {v}")
                        if v not in q:
                            errors.append(f"{rid}: {arg} {v} not verbatim in query")
                        uuids_here.add(v)
                    if arg == "codebase_id":
                        if v == "global":
                            if "global" not in q.lower():
                                errors.append(f"{rid}: codebase global but query does not say global")
                        elif not HEX8_RE.match(v):
                            errors.append(f"{rid}: codebase_id not 8 hex chars: {v}")
                        elif v not in q:
                            errors.append(f"{rid}: codebase_id {v} not verbatim in query")
        for u in uuids_here:
            uuid_seen[u] += 1
        # every UUID in the query that is in the gold must be used; UUIDs in no-call queries are fine
    errors += [f"UUID {u} used in {c} examples" for u, c in uuid_seen.items() if c > 1]

    # counts
    by_tool_single = Counter()
    by_tool_any = Counter()
    tag_counts = Counter()
    ncalls = Counter()
    for r in rows:
        tag_counts.update(r["tags"])
        names = [c["name"] for c in r["calls"]]
        ncalls[len(names)] += 1
        for n in set(names):
            by_tool_any[n] += 1
        if len(names) == 1:
            by_tool_single[names[0]] += 1
    nocall = sum(1 for r in rows if not r["calls"])
    multi = sum(1 for r in rows if len(r["calls"]) > 1)

    mins = {"total >= 180": len(rows) >= 180,
            "no-call >= 45": nocall >= 45,
            "no-call >= 20%": nocall >= 0.2 * len(rows),
            "multi >= 25": multi >= 25}
    for t in tools:
        need = 25 if t in ("create_task", "send_message") else 12
        mins[f"{t} single >= {need}"] = by_tool_single[t] >= need
    for s in STYLES:
        mins[f"style {s} present"] = tag_counts[s] > 0
    for k, ok in mins.items():
        if not ok:
            errors.append(f"minimum not met: {k}")

    md = "--markdown" in sys.argv
    print(f"examples: {len(rows)}  (no-call {nocall} = {100*nocall/len(rows):.1f}%, "
          f"single-call {ncalls[1]}, multi-call {multi})")
    print("calls per example: " + ", ".join(f"{k}: {v}" for k, v in sorted(ncalls.items())))
    if md:
        print("\n| tool | single-call examples | examples using it (incl. multi) |\n|---|---|---|")
    for t in tools:
        if md:
            print(f"| {t} | {by_tool_single[t]} | {by_tool_any[t]} |")
        else:
            print(f"  {t:22s} single {by_tool_single[t]:3d}   any {by_tool_any[t]:3d}")
    if md:
        print("\n| tag | examples |\n|---|---|")
    for t, c in sorted(tag_counts.items(), key=lambda x: (-x[1], x[0])):
        if md:
            print(f"| {t} | {c} |")
        else:
            print(f"  {t:22s} {c:3d}")
    if errors:
        print(f"\n{len(errors)} ERROR(S):")
        for e in errors:
            print("  " + e)
        sys.exit(1)
    print("\nall checks passed")


if __name__ == "__main__":
    main()
