// trace_engine_check.mjs - Chrome DevTools' own trace parser (npm
// @paulirish/trace_engine, the Performance panel's engine) reads Kiln's
// traces: for each FILE it parses the events with TraceModel and checks,
// against what the file itself says,
//   - the parse succeeds and gives a parsed trace;
//   - the trace bounds (Meta.traceBounds: min, max, range, in µs) equal the
//     file's within 1 µs. DevTools bounds a trace by its slices and instants
//     (ph X, B, E, I) only, so the file's bounds are taken over those;
//     Kiln's async (b/e), flow (s/f), counter (C) and 'i' events do not move
//     DevTools' bounds (the line printed per file shows both ranges);
//   - every process and thread that has events has the name the file's M
//     events give it (Meta.processNames, Meta.threadsInProcess), the
//     process is "kiln", and each thread with slices has all of them as
//     flame-chart entries under that name (Renderer.processes);
//   - the NAMES given after FILE (comma-separated) are among its threads.
// Usage: node trace_engine_check.mjs NPM_PREFIX FILE NAMES [FILE NAMES]...
// NPM_PREFIX holds node_modules/@paulirish/trace_engine. Prints one line per
// file; exits 1 if any check failed, 2 on bad usage.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [prefix, ...pairs] = process.argv.slice(2);
if (!prefix || pairs.length === 0 || pairs.length % 2) {
  console.error("usage: node trace_engine_check.mjs NPM_PREFIX FILE NAMES [FILE NAMES]...");
  process.exit(2);
}

// The engine runs in DevTools' page; under node one browser class it
// constructs is missing. A plain rectangle will do.
if (typeof globalThis.DOMRect === "undefined") {
  globalThis.DOMRect = class {
    constructor(x = 0, y = 0, width = 0, height = 0) {
      Object.assign(this, { x, y, width, height });
    }
  };
}

const pkgDir = path.join(prefix, "node_modules", "@paulirish", "trace_engine");
const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, "package.json"), "utf8"));
const Trace = await import(pathToFileURL(path.join(pkgDir, pkg.main)).href);

const SPAN_PHASES = new Set(["X", "B", "E", "I"]);
const TOL_US = 1;

// What the file says: names, slices per thread, bounds.
function fromFile(events) {
  const procs = new Map(), threads = new Map(), slices = new Map(), used = new Set();
  let min = Infinity, max = -Infinity, allMin = Infinity, allMax = -Infinity;
  for (const e of events) {
    const key = `${e.pid}:${e.tid}`;
    if (e.ph === "M") {
      if (e.name === "process_name") procs.set(e.pid, e.args.name);
      if (e.name === "thread_name") threads.set(key, e.args.name);
      continue;
    }
    used.add(key);
    const end = e.ts + (e.dur ?? 0);
    allMin = Math.min(allMin, e.ts);
    allMax = Math.max(allMax, end);
    if (!SPAN_PHASES.has(e.ph)) continue;
    min = Math.min(min, e.ts);
    max = Math.max(max, end);
    if (e.ph === "X") slices.set(key, (slices.get(key) ?? 0) + 1);
  }
  return { procs, threads, slices, used, min, max, allMin, allMax };
}

async function check(file, wantNames) {
  const bad = [];
  const doc = JSON.parse(fs.readFileSync(file, "utf8"));
  const events = doc.traceEvents;
  const f = fromFile(events);
  if (!Number.isFinite(f.min)) return [`${file}: no slices to bound the trace`];

  const model = Trace.TraceModel.Model.createWithAllHandlers();
  await model.parse(events);
  const parsed = model.parsedTrace();
  if (!parsed || !parsed.data) return [`${file}: trace_engine gave no parsed trace`];
  const meta = parsed.data.Meta;

  const b = meta.traceBounds;
  const near = (a, w) => Number.isFinite(a) && Math.abs(a - w) <= TOL_US;
  if (!near(b.min, f.min) || !near(b.max, f.max) || !near(b.range, f.max - f.min))
    bad.push(
      `bounds: trace_engine min ${b.min} max ${b.max} range ${b.range}, ` +
        `file min ${f.min} max ${f.max} range ${f.max - f.min} (µs)`,
    );

  const found = new Set();
  for (const key of f.used) {
    const [pid, tid] = key.split(":").map(Number);
    const want = f.threads.get(key);
    const pname = meta.processNames.get(pid)?.args?.name;
    if (pname !== "kiln" || pname !== f.procs.get(pid))
      bad.push(
        `pid ${pid}: process name ${JSON.stringify(pname)}, file ` +
          `${JSON.stringify(f.procs.get(pid))}, want "kiln"`,
      );
    const tname = meta.threadsInProcess.get(pid)?.get(tid)?.args?.name;
    if (!want || tname !== want)
      bad.push(`tid ${tid}: thread name ${JSON.stringify(tname)}, file ${JSON.stringify(want)}`);
    else found.add(tname);
    const n = f.slices.get(key) ?? 0;
    if (n === 0) continue;
    const rt = parsed.data.Renderer.processes.get(pid)?.threads.get(tid);
    if (!rt || rt.name !== want || rt.entries.length !== n)
      bad.push(
        `tid ${tid}: flame chart has ${rt ? rt.entries.length : "no"} entries named ` +
          `${JSON.stringify(rt?.name)}, file ${n} slices on ${JSON.stringify(want)}`,
      );
  }
  for (const name of wantNames.split(",").filter(Boolean))
    if (!found.has(name)) bad.push(`no thread named ${JSON.stringify(name)} (found ${[...found]})`);

  if (bad.length) return bad.map((m) => `${file}: ${m}`);
  const us = (v) => v.toFixed(3);
  console.log(
    `${path.basename(file)}: trace_engine ${pkg.version}: bounds ${us(b.min)}..${us(b.max)} µs ` +
      `(range ${us(b.range)}; all events ${us(f.allMin)}..${us(f.allMax)}), threads ` +
      `${[...found].sort().join(", ")}, ${events.length} events`,
  );
  return [];
}

let failed = 0;
for (let i = 0; i < pairs.length; i += 2) {
  let errs;
  try {
    errs = await check(pairs[i], pairs[i + 1]);
  } catch (e) {
    errs = [`${pairs[i]}: ${e && e.stack ? e.stack : e}`];
  }
  for (const m of errs) console.log(`FAIL: ${m}`);
  failed += errs.length > 0;
}
process.exit(failed ? 1 : 0);
