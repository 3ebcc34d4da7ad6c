#!/usr/bin/env python3
"""trace_validate.py - a strict checker of Chrome Trace Event JSON as Kiln
writes it, following the rules Perfetto enforces when it imports a trace.

usage: trace_validate.py FILE...   exit 0 when every file passes, 1 otherwise
       (each problem on stderr as FILE: rule: detail); a gzip-compressed
       FILE (by its magic bytes) is read decompressed

Rules (the rule names match tests/data/trace_bad_<rule>*.json fixtures):
  object       the top level is an object with a traceEvents array,
               displayTimeUnit "ms" or "ns" and an otherData object
  fields       every event has ph (string), name (string), pid and tid
               (integers) and a finite, non-negative numeric ts; X has a
               non-negative numeric dur; b/e/s/f have an id
  phase        ph is one of the phases Kiln writes: X B E b e s f C i M
  nesting      per (pid, tid), X/B/E slices nest strictly: sorted by ts
               (ties: longer first) none overruns its parent, every E closes
               the innermost open B of that thread, none is left open
  async        per (cat, id, name), every e closes an open b, none left open
  flow         every flow s has a later f with the same (cat, id, name),
               every f has an earlier s
  counter      C events have an args object of finite numbers, at least one
  metadata     M events are process_name / thread_name (or the sort
               indices) with args.name a string; every (pid, tid) that has
               events has a thread_name and every pid a process_name
"""
import gzip
import json
import math
import sys

PHASES = set("XBEbesfCiM")
META = {"process_name", "thread_name", "process_sort_index", "thread_sort_index"}
EPS = 1e-6  # µs; the writer prints three decimals


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate(doc):
    """Returns a list of (rule, detail) problems."""
    errs = []

    def err(rule, msg):
        if len(errs) < 50:
            errs.append((rule, msg))

    if not isinstance(doc, dict):
        return [("object", "top level is not an object (the array form is not accepted)")]
    evs = doc.get("traceEvents")
    if not isinstance(evs, list):
        return [("object", "traceEvents missing or not an array")]
    if doc.get("displayTimeUnit") not in ("ms", "ns"):
        err("object", "displayTimeUnit missing or not ms/ns")
    if not isinstance(doc.get("otherData"), dict):
        err("object", "otherData missing or not an object")

    slices = {}  # (pid, tid) -> [(ts, kind, dur, index)]
    threads_named, procs_named, used = set(), set(), set()
    asyncs, flows = {}, {}
    for i, e in enumerate(evs):
        where = "event %d" % i
        if not isinstance(e, dict):
            err("fields", where + " is not an object")
            continue
        ph = e.get("ph")
        if not isinstance(ph, str):
            err("fields", where + " has no ph")
            continue
        if ph not in PHASES:
            err("phase", "%s: unknown phase %r" % (where, ph))
            continue
        if not isinstance(e.get("name"), str):
            err("fields", where + " has no string name")
            continue
        where = "event %d (%s %r)" % (i, ph, e["name"])
        pid, tid, ts = e.get("pid"), e.get("tid"), e.get("ts")
        if not isinstance(pid, int) or not isinstance(tid, int):
            err("fields", where + ": pid and tid must be integers")
            continue
        if not is_num(ts) or ts < 0:
            err("fields", where + ": ts must be a non-negative finite number")
            continue
        if ph == "M":
            args = e.get("args")
            if e["name"] not in META:
                err("metadata", where + ": unknown metadata name")
            elif not isinstance(args, dict) or (
                    e["name"].endswith("_name") and not isinstance(args.get("name"), str)):
                err("metadata", where + ": args.name must be a string")
            elif e["name"] == "thread_name":
                threads_named.add((pid, tid))
            elif e["name"] == "process_name":
                procs_named.add(pid)
            continue
        used.add((pid, tid))
        if ph == "X":
            dur = e.get("dur")
            if not is_num(dur) or dur < 0:
                err("fields", where + ": X needs a non-negative dur")
                continue
            slices.setdefault((pid, tid), []).append((ts, 0, dur, i))
        elif ph in "BE":
            slices.setdefault((pid, tid), []).append((ts, 1 if ph == "B" else -1, 0, i))
        elif ph in "besf":
            if "id" not in e and "id2" not in e:
                err("fields", where + ": needs an id")
                continue
            key = (e.get("cat"), json.dumps(e.get("id", e.get("id2"))), e["name"])
            (asyncs if ph in "be" else flows).setdefault(key, []).append((ts, ph, i))
        elif ph == "C":
            args = e.get("args")
            if not isinstance(args, dict) or not args:
                err("counter", where + ": needs a non-empty args object")
            else:
                for k, v in args.items():
                    if not is_num(v):
                        err("counter", "%s: args.%s = %r is not a number" % (where, k, v))

    for key, lst in slices.items():
        # X: (start, end); B/E: a stack. Sort by ts, ties: E before B, longer X first.
        lst.sort(key=lambda s: (s[0], 0 if s[1] < 0 else 1, -s[2], s[3]))
        stack = []  # (end or None for B, index)
        for ts, kind, dur, i in lst:
            while stack and stack[-1][0] is not None and stack[-1][0] <= ts + EPS:
                stack.pop()
            if kind == -1:
                if not stack or stack[-1][0] is not None:
                    err("nesting", "pid %d tid %d: E (event %d) does not close an open B"
                        % (key[0], key[1], i))
                else:
                    stack.pop()
                continue
            if stack and stack[-1][0] is not None and ts + dur > stack[-1][0] + EPS:
                err("nesting", "pid %d tid %d: event %d [%g, %g] overruns its parent ending at %g"
                    % (key[0], key[1], i, ts, ts + dur, stack[-1][0]))
            stack.append((ts + dur if kind == 0 else None, i))
        if any(s[0] is None for s in stack):
            err("nesting", "pid %d tid %d: a B is never closed" % key)

    for key, lst in asyncs.items():
        lst.sort(key=lambda a: (a[0], a[2]))
        depth = 0
        for ts, ph, i in lst:
            if ph == "b":
                depth += 1
            elif depth == 0:
                err("async", "e (event %d) of %r has no open b" % (i, key))
            else:
                depth -= 1
        if depth:
            err("async", "%d b of %r never closed" % (depth, key))

    for key, lst in flows.items():
        lst.sort(key=lambda a: (a[0], a[2]))
        open_s = 0
        for ts, ph, i in lst:
            if ph == "s":
                open_s += 1
            elif open_s == 0:
                err("flow", "f (event %d) of %r has no earlier s" % (i, key))
            else:
                open_s -= 1
        if open_s:
            err("flow", "%d flow s of %r without an f" % (open_s, key))

    for pid, tid in sorted(used):
        if (pid, tid) not in threads_named:
            err("metadata", "pid %d tid %d has events but no thread_name" % (pid, tid))
        if pid not in procs_named:
            err("metadata", "pid %d has events but no process_name" % pid)
            procs_named.add(pid)
    return errs


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    bad = 0
    for path in argv[1:]:
        try:
            with open(path, "rb") as f:
                raw = f.read()
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            doc = json.loads(raw)
        except (OSError, ValueError, EOFError) as ex:
            print("%s: object: %s" % (path, ex), file=sys.stderr)
            bad += 1
            continue
        errs = validate(doc)
        for rule, msg in errs:
            print("%s: %s: %s" % (path, rule, msg), file=sys.stderr)
        bad += bool(errs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
