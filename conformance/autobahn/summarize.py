#!/usr/bin/env python
# Summarizes an Autobahn|Testsuite report directory and decides pass or fail;
# shared by run-server-suite.sh and run-client-suite.sh. Runs on the suite's
# own Python 2.7 as well as Python 3.
#
# usage: summarize.py REPORTS EXPECTED_CASES STRICT(0|1) [COMMAND_STATUS [EMPTY_MESSAGE]]
import json, os, sys
reports, expected, strict = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
# The client suite runs a COMMAND and passes its exit status; the server suite does not.
crc = int(sys.argv[4]) if len(sys.argv) > 4 else 0
empty = sys.argv[5] if len(sys.argv) > 5 else "the report contains no cases"
index = json.load(open(os.path.join(reports, "index.json")))

def key(cid):
    return [int(x) for x in cid.split(".")]

ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
worst = 1 if crc != 0 else 0
if not index:
    print("RESULT: FAIL - " + empty)
    sys.exit(1)
for agent in sorted(index):
    cases = index[agent]
    counts, close_counts = {}, {}
    for c in cases.values():
        counts[c["behavior"]] = counts.get(c["behavior"], 0) + 1
        close_counts[c["behaviorClose"]] = close_counts.get(c["behaviorClose"], 0) + 1
    print("")
    print("agent %s: %d cases reported%s" % (agent, len(cases),
          (" of %d selected" % expected) if expected else ""))
    for b in ORDER + sorted(set(counts) - set(ORDER)):
        print("  %-15s %4d" % (b, counts.get(b, 0)))
    print("  close handshake: " + ", ".join("%s %d" % (b, n) for b, n in sorted(close_counts.items())))

    def ids(pred):
        return sorted([cid for cid, c in cases.items() if pred(c)], key=key)
    failed = ids(lambda c: c["behavior"] == "FAILED")
    nonstrict = ids(lambda c: c["behavior"] == "NON-STRICT")
    other = ids(lambda c: c["behavior"] not in ORDER)
    close_bad = ids(lambda c: c["behaviorClose"] in ("FAILED", "UNCLEAN") and c["behavior"] != "FAILED")
    close_ns = ids(lambda c: c["behaviorClose"] in ("WRONG CODE", "FAILED BY CLIENT"))
    missing = max(expected - len(cases), 0)
    print("  FAILED ids:     " + (" ".join(failed) or "-"))
    print("  NON-STRICT ids: " + (" ".join(nonstrict) or "-"))
    if other:
        print("  other-behavior ids: " + " ".join(other))
    if close_bad:
        print("  close FAILED/UNCLEAN ids: " + " ".join(close_bad))
    if close_ns:
        print("  close WRONG CODE/FAILED BY CLIENT ids: " + " ".join(close_ns))
    if missing:
        print("  MISSING: %d selected cases have no result" % missing)
    for cid in (failed + close_bad)[:15]:
        try:
            d = json.load(open(os.path.join(reports, cases[cid]["reportfile"])))
            print("    %-8s %s | close: %s" % (cid, d.get("result"), d.get("resultClose")))
        except Exception:
            pass
    bad = failed or close_bad or other or missing
    if strict and (nonstrict or close_ns):
        bad = True
    if bad:
        worst = 1
print("")
if crc != 0:
    print("COMMAND exited with status %d" % crc)
print("report: %s" % os.path.join(reports, "index.html"))
print("RESULT: %s" % ("FAIL" if worst else "PASS"))
sys.exit(worst)
