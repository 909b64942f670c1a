#!/usr/bin/env python3
"""Sums the Criterion results of meson test logs into one closing line."""
import json
import re
import sys

SYNTH = re.compile(r"Synthesis: Tested: (\d+) \| Passing: (\d+) \| Failing: (\d+) \| Crashing: (\d+)")

passed = failed = 0
for path in sys.argv[1:]:
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    except OSError as e:
        print(f"summary: {path}: {e}")
        failed += 1
        continue
    for line in lines:
        rec = json.loads(line)
        out = (rec.get("stdout") or "") + (rec.get("stderr") or "")
        m = SYNTH.findall(out)
        ok = rec.get("result") == "OK"
        if m:
            _, p, f, c = (int(x) for x in m[-1])
            passed += p
            failed += f + c
            if not ok and f + c == 0:
                failed += 1  # the binary failed outside any test case (sanitizer, crash)
        else:
            passed += ok
            failed += not ok
        print(f"  {'ok  ' if ok else 'FAIL'} {rec.get('name')} ({path.split('/')[0]})")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
