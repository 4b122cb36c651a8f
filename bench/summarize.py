#!/usr/bin/python3
"""Summary of a kortexdl_bench JSON file (Debian's python3, standard library only).

    /usr/bin/python3 bench/summarize.py build/bench.json [more.json ...] [--markdown]

Uses the median aggregates when the run had repetitions, the plain rows
otherwise. For every config x batch x op x thread mode: the network's median
GFLOP/s, the ceiling's (the same GEMMs back to back with dnnl_sgemm), the
fraction of the ceiling and the median times; then the raw dnnl_sgemm rows and
the two targets.
"""
import argparse
import json
import sys

CONFIGS = ["small", "medium", "large"]
OPS = ["forward", "train"]
# The targets.
TRAIN_TARGET_FRACTION = 0.60
TRAIN_TARGET_CONFIGS = ("medium", "large")
TRAIN_TARGET_MIN_BATCH = 256
FORWARD_TARGET_US = 2.0
# A row whose threads waited for a CPU held by another task for more than
# this fraction of the run was disturbed by other work on the machine.
DISTURBED_RUNQ = 0.02


def load(paths):
    """Rows from one or more JSON files (a later file's rows replace an
    earlier file's rows of the same name, so a noisy piece can be rerun)."""
    rows = {}  # key -> {"median": row, "cv": row, ...}
    context = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        context = context or data.get("context", {})
        seen = {}
        for b in data["benchmarks"]:
            kind = b.get("aggregate_name", "single") if b.get("run_type") == "aggregate" else "single"
            key = tuple(b["run_name"].split("/min_time")[0].split("/real_time")[0].split("/"))
            seen.setdefault(key, {})[kind] = b
        rows.update(seen)
    return context, rows


def pick(entry, kind="median"):
    if entry is None:
        return None
    return entry.get(kind) or entry.get("single")


def to_us(row):
    scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[row.get("time_unit", "ns")]
    return row["real_time"] * scale


def cv_percent(entry):
    cv = entry.get("cv") if entry else None
    if cv is None:
        return None
    return cv["real_time"] * 100.0  # the cv aggregate stores a ratio in real_time


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table(headers, body, markdown):
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if i else ":---" for i in range(len(headers))) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    out = ["  ".join(h.rjust(w) for h, w in zip(headers, widths))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in body]
    return "\n".join(out)


def cpu_seconds(stat_line):
    # "cpu user nice system idle iowait irq softirq steal ..." in USER_HZ ticks
    f = [int(x) for x in stat_line.split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return sum(f[:8]), idle


def fraction(rows, cfg, batch, op, mode):
    net = pick(rows.get(("net", op, cfg, batch, mode)))
    cands = [pick(rows.get(("ceil", op, cfg, batch, m))) for m in ([mode, "st"] if mode == "mt" else [mode])]
    cands = [c["GFLOP/s"] for c in cands if c and c.get("GFLOP/s")]
    if not net or not cands:
        return None, None
    return net["GFLOP/s"] / max(cands), to_us(net)


def spread(args):
    runs = [load([p])[1] for p in args.json]
    body = []
    for cfg in CONFIGS:
        for batch in ["1", "32", "256", "1000"]:
            for op in OPS:
                for mode in args.modes.split(","):
                    vals = [fraction(r, cfg, batch, op, mode) for r in runs]
                    if all(v[0] is None for v in vals):
                        continue
                    fr = sorted(v[0] for v in vals if v[0] is not None)
                    body.append([cfg, batch, op, mode] +
                                [fmt(v[0] * 100 if v[0] is not None else None, ".0f") for v in vals] +
                                [fmt(fr[len(fr) // 2] * 100, ".0f")] +
                                [fmt(v[1], ".2f") for v in vals])
    n = len(runs)
    print("Fraction of the ceiling (%) per run, its median, and the network's median time (us) per run:")
    print(table(["config", "batch", "op", "thr"] + [f"run{i + 1} %" for i in range(n)] + ["median %"] +
                [f"run{i + 1} us" for i in range(n)], body, args.markdown))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("json", nargs="+", help="kortexdl_bench JSON output(s)")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables")
    ap.add_argument("--proc-stat-before")
    ap.add_argument("--proc-stat-after")
    ap.add_argument("--time-file", help="'%%e %%U %%S' of the benchmark from /usr/bin/time")
    ap.add_argument("--modes", default="mt,st", help="thread modes to show (mt,st)")
    ap.add_argument("--spread", action="store_true",
                    help="the files are separate full runs: print each run's fraction of the ceiling side by side")
    args = ap.parse_args()
    if args.spread:
        spread(args)
        return

    context, rows = load(args.json)
    modes = args.modes.split(",")
    md = args.markdown

    print(f"# {' '.join(args.json)}: {context.get('date', '?')}, {context.get('num_cpus', '?')} CPUs at "
          f"{context.get('mhz_per_cpu', '?')} MHz, oneDNN {context.get('dnnl_version', '?')}, "
          f"kortexdl default threads {context.get('kortexdl_threads_default', '?')}")
    print()

    body = []
    fractions = {}
    busy_rows = 0
    for cfg in CONFIGS:
        for batch in ["1", "32", "256", "1000"]:
            for op in OPS:
                for mode in modes:
                    net_e = rows.get(("net", op, cfg, batch, mode))
                    net = pick(net_e)
                    if net is None:
                        continue
                    # The ceiling: dnnl_sgemm running the step's GEMMs in the
                    # same thread mode; for mt, the better of two threads and
                    # one (tiny GEMMs run faster on one thread, and the library
                    # itself drops to one thread below ~8 MFLOP).
                    cands = []
                    for cmode in ([mode, "st"] if mode == "mt" else [mode]):
                        c = pick(rows.get(("ceil", op, cfg, batch, cmode)))
                        if c and c.get("GFLOP/s"):
                            cands.append((c["GFLOP/s"], cmode, c))
                    best = max(cands, key=lambda t: t[0]) if cands else None
                    g = net.get("GFLOP/s")
                    c = best[0] if best else None
                    frac = g / c if (g and c) else None
                    fractions[(cfg, int(batch), op, mode)] = (frac, to_us(net))
                    other = max(net.get("runq_wait", 0.0), best[2].get("runq_wait", 0.0) if best else 0.0)
                    flag = "*" if other > DISTURBED_RUNQ else ""
                    busy_rows += 1 if flag else 0
                    body.append([cfg, batch, op, mode, fmt(g, ".1f"), fmt(c, ".1f"),
                                 best[1] if best else "-",
                                 fmt(frac * 100 if frac is not None else None, ".0f") + ("%" if frac is not None else ""),
                                 fmt(to_us(net), ".2f"), fmt(to_us(best[2]) if best else None, ".2f"),
                                 fmt(cv_percent(net_e), ".1f"), fmt(other, ".3f") + flag])
    print("Network vs the dnnl_sgemm ceiling for the same step (medians):")
    print(table(["config", "batch", "op", "thr", "GFLOP/s", "ceil GFLOP/s", "ceil thr", "of ceil", "time us",
                 "ceil us", "cv%", "runq wait"], body, md))
    print("  ceil thr: thread mode of the dnnl_sgemm ceiling used (mt rows take the faster of mt and st);")
    print("  cv%: coefficient of variation of the network's time over the repetitions;")
    print("  runq wait: seconds per second our threads were runnable but waited for a CPU another task held")
    print("    (worse of the row and its ceiling, median over repetitions)")
    if busy_rows:
        print(f"  * {busy_rows} rows were disturbed by other work (runq wait > {DISTURBED_RUNQ}): treat them as noise")
    print()

    sg = []
    for key, entry in rows.items():
        if key[0] != "sgemm" or len(key) < 4:
            continue
        if key[3] not in modes:
            continue
        r = pick(entry)
        m, n, k = (int(x) for x in key[2].split("x"))
        sg.append((key[3], m * n * k, [key[1], key[2], key[3], fmt(r.get("GFLOP/s"), ".1f"), fmt(to_us(r), ".2f"),
                                        fmt(r.get("runq_wait"), ".3f")]))
    if sg:
        sg.sort(key=lambda t: (t[0], t[1]))
        print("Raw dnnl_sgemm (row-major C = op(A) op(B), M x N x K), medians:")
        print(table(["op", "MxNxK", "thr", "GFLOP/s", "time us", "runq wait"], [t[2] for t in sg], md))
        print()

    print("Targets:")
    checked = False
    for cfg in TRAIN_TARGET_CONFIGS:
        for batch in (256, 1000):
            for mode in modes:
                v = fractions.get((cfg, batch, "train", mode))
                if v is None or v[0] is None:
                    continue
                checked = True
                ok = v[0] >= TRAIN_TARGET_FRACTION
                print(f"  (i)  train {cfg:6s} batch {batch:4d} {mode}: {v[0] * 100:5.1f}% of ceiling "
                      f"(target >= {TRAIN_TARGET_FRACTION * 100:.0f}%): {'MET' if ok else 'MISSED'}")
    if not checked:
        print("  (i)  no training rows at batch >= 256 for medium/large in this file")
    for mode in modes:
        v = fractions.get(("small", 1, "forward", mode))
        if v is not None:
            ok = v[1] < FORWARD_TARGET_US
            print(f"  (ii) forward small batch 1 {mode}: {v[1]:.3f} us (target < {FORWARD_TARGET_US} us): "
                  f"{'MET' if ok else 'MISSED'}")

    if args.proc_stat_before and args.proc_stat_after and args.time_file:
        try:
            with open(args.time_file) as f:
                wall, user, system = (float(x) for x in f.read().split()[-3:])
            t0, i0 = cpu_seconds(args.proc_stat_before)
            t1, i1 = cpu_seconds(args.proc_stat_after)
            hz = 100.0
            busy = ((t1 - t0) - (i1 - i0)) / hz
            ours = user + system
            other = max(0.0, busy - ours)
            print()
            print(f"Run: {wall:.0f} s wall, the benchmark used {ours:.0f} CPU-s; other processes used "
                  f"~{other:.0f} CPU-s ({other / wall * 100 if wall else 0:.0f}% of one core on average)"
                  + (f"; {busy_rows} rows disturbed, rerun on a quieter machine (or KORTEX_BENCH_NICE=-20)"
                     if busy_rows else ""))
        except (OSError, ValueError) as e:
            print(f"(could not compute machine load: {e})", file=sys.stderr)


if __name__ == "__main__":
    main()
