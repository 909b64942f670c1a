#!/usr/bin/env python3
"""The benchmark report: reads the saga-bench JSON files of one bench/run.sh
run and prints Markdown (capacity, latency, synchronous baseline and ratios,
outage, reliability, the seed's verification targets and our goals from
shared/design/BENCHMARKS.md, the sagad profile); writes DIR/summary.json.

Usage: report.py DIR
"""
import glob
import json
import math
import os
import re
import statistics
import sys


def load(out, pattern):
    runs = []
    for path in sorted(glob.glob(os.path.join(out, pattern))):
        try:
            with open(path) as f:
                runs.append(json.load(f))
        except (OSError, ValueError) as e:
            print(f"<!-- skipped {path}: {e} -->")
    return runs


def get(d, path, default=None):
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d or d[k] is None:
            return default
        d = d[k]
    return d


def med(values):
    v = [x for x in values if isinstance(x, (int, float)) and not math.isnan(x)]
    return statistics.median(v) if v else None


def fmt(v, digits=1, unit=""):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if abs(v) >= 100 or digits == 0:
        return f"{v:,.0f}{unit}"
    return f"{v:,.{digits}f}{unit}"


def pct(v, digits=2):
    return "n/a" if v is None else f"{100.0 * v:.{digits}f}%"


def rate_of(run):
    return get(run, "config.rate", 0)


def verdict(ok):
    return "n/a" if ok is None else ("**pass**" if ok else "**FAIL**")


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


def env_of(out):
    env = {}
    try:
        with open(os.path.join(out, "run.env")) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    env[k] = v
    except OSError:
        pass
    return env


def read_text(path, limit=None):
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    return "\n".join(lines[:limit] if limit else lines)


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out = sys.argv[1]
    env = env_of(out)
    cap = sorted(load(out, "cap-*.json"), key=rate_of)
    lat = load(out, "lat-*.json")
    sync = load(out, "sync-*.json")
    syncw = load(out, "syncw-*.json")
    syncp = load(out, "syncp-*.json")
    outages = load(out, "out-*.json")
    seeds = load(out, "seed-*.json")
    every_open = cap + lat + outages + seeds + load(out, "capB-*.json") + load(out, "latB-*.json")
    p = print

    p("# sagad benchmark report\n")
    p(f"- date: {env.get('date', '?')}; host: {env.get('host', '?')}; commit: {env.get('git', '?')}")
    p(f"- settings: {env.get('quick') == '1' and 'quick' or 'full'} run; "
      f"participants: {env.get('parts', '?')} processes per service, "
      f"fail rate {env.get('fail', '?')}, work {env.get('lat_ms', '?')} ms per command; "
      f"PostgreSQL fsync=on, synchronous_commit=on; JetStream file storage")
    p(f"- load average before / after: {env.get('load_before', '?')} / {env.get('load_after', '?')} "
      f"(other work on this 2-core machine adds noise); elapsed {env.get('elapsed_s', '?')} s")
    p()

    # ---- capacity
    best = max([rate_of(r) for r in cap if r.get("sustained")], default=0)
    p("## 1. Capacity (open loop, each rate on the same system, stopping at the first failure)\n")
    rows = []
    for r in cap:
        rows.append([
            r["tag"], fmt(r.get("offered_per_s")), fmt(r.get("completed_per_s")),
            fmt(r.get("transitions_per_s"), 0),
            f"{fmt(get(r, 'start_ack_ms.p50'), 2)} / {fmt(get(r, 'start_ack_ms.p95'), 2)} / "
            f"{fmt(get(r, 'start_ack_ms.p99'), 2)}",
            f"{fmt(get(r, 'completion_ms.p50'))} / {fmt(get(r, 'completion_ms.p95'))}",
            fmt(get(r, "message_age_ms.p95")), fmt(get(r, "backlog.growth"), 0),
            fmt(get(r, "sagad.cpu_cores"), 2), fmt(get(r, "processes.postgres.cpu_cores"), 2),
            fmt(get(r, "processes.pg-backend-of-sagad.cpu_cores"), 2),
            fmt(get(r, "processes.nats.cpu_cores"), 2), fmt(get(r, "processes.participants.cpu_cores"), 2),
            fmt(get(r, "outbox.dead_rows_max"), 0),
            ("sustained" if r.get("sustained") else r.get("verdict", ""))
            + ("" if get(r, "generator.on_schedule", True) else " (generator behind schedule)"),
        ])
    p(table(["run", "offered/s", "completed/s", "transitions/s",
             "start ack p50/p95/p99 ms", "completion p50/p95 ms", "msg age p95 ms",
             "in-flight growth", "sagad cores", "postgres cores (all)", "sagad's backend cores",
             "nats cores", "participants cores", "dead outbox rows (max)", "verdict"], rows))
    p(f"\n**Highest sustained rate: {best} sagas/s** (completions >= 97% of offered, in-flight "
      "growth <= max(20, 0.25 s of load), start-ack p95 < 250 ms, saga completion p95 < 1 s "
      "(+ 3x the participants' work), every start answered, every saga terminal after the "
      "drain).\n")

    # ---- latency
    p(f"## 2. Latency at half the highest sustained rate ({fmt(rate_of(lat[0]), 0) if lat else 'n/a'}/s)\n")
    keys = [("start ack p50", "start_ack_ms.p50", 2), ("start ack p95", "start_ack_ms.p95", 2),
            ("start ack p99", "start_ack_ms.p99", 2), ("completion p50", "completion_ms.p50", 1),
            ("completion p95", "completion_ms.p95", 1), ("completion p99", "completion_ms.p99", 1),
            ("message age p95", "message_age_ms.p95", 1), ("completed/s", "completed_per_s", 1),
            ("sagad cores", "sagad.cpu_cores", 3), ("sagad peak RSS MB", "sagad.peak_rss_mb", 1)]
    rows = []
    for name, key, d in keys:
        vals = [get(r, key) for r in lat]
        rows.append([name] + [fmt(v, d) for v in vals] + [fmt(med(vals), d)])
    p(table(["figure (ms unless noted)"] + [r["tag"] for r in lat] + ["median"], rows))
    p()

    # ---- baseline
    p("## 3. Synchronous baseline (same participants, the caller waits for each step's reply)\n")
    rows = []
    for r in sync + syncw + syncp:
        rows.append([r["tag"], fmt(get(r, "config.callers"), 0),
                     "closed loop" if not rate_of(r) else f"paced {fmt(rate_of(r), 0)}/s",
                     fmt(r.get("completed_per_s")),
                     f"{fmt(get(r, 'latency_ms.p50'))} / {fmt(get(r, 'latency_ms.p95'))} / "
                     f"{fmt(get(r, 'latency_ms.p99'))}",
                     f"{fmt(get(r, 'step_round_trip_ms.p50'), 2)} / {fmt(get(r, 'step_round_trip_ms.p99'), 2)}",
                     fmt(r.get("timeouts"), 0)])
    p(table(["run", "callers", "load", "chains/s", "caller latency p50/p95/p99 ms",
             "one step p50/p99 ms", "step timeouts"], rows))
    sync_tput = max([x for x in [med([r.get("completed_per_s") for r in sync]),
                                 med([r.get("completed_per_s") for r in syncw])] if x],
                    default=None)
    tput_ratio = best / sync_tput if sync_tput and best else None
    ack50 = med([get(r, "start_ack_ms.p50") for r in lat])
    ack99 = med([get(r, "start_ack_ms.p99") for r in lat])
    done50 = med([get(r, "completion_ms.p50") for r in lat])
    sp50 = med([get(r, "latency_ms.p50") for r in syncp])
    sp99 = med([get(r, "latency_ms.p99") for r in syncp])
    p()
    p(f"- throughput: highest sustained through sagad **{best}/s** vs the synchronous chain's best "
      f"closed-loop **{fmt(sync_tput)}/s** -> ratio **{fmt(tput_ratio, 2)}x**")
    p(f"- caller-visible latency at {fmt(rate_of(syncp[0]), 0) if syncp else 'n/a'}/s: synchronous chain "
      f"p50 {fmt(sp50)} ms / p99 {fmt(sp99)} ms vs sagad's start ack p50 {fmt(ack50, 2)} ms / "
      f"p99 {fmt(ack99, 2)} ms -> **{fmt(sp50 / ack50 if sp50 and ack50 else None, 1)}x** (p50), "
      f"**{fmt(sp99 / ack99 if sp99 and ack99 else None, 1)}x** (p99) lower for the caller; the saga "
      f"itself completes in p50 {fmt(done50)} ms")
    p()

    # ---- outage
    p("## 4. Consumer outage (participants SIGSTOPped, then SIGCONTed)\n")
    rows = []
    for r in outages + seeds:
        o = r.get("outage", {})
        rows.append([r["tag"], r.get("saga"), fmt(rate_of(r), 0), fmt(o.get("pause_s"), 0),
                     fmt(o.get("backlog_peak_sagas"), 0), fmt(o.get("backlog_peak_cmd_msgs"), 0),
                     fmt(o.get("drain_s"), 0), fmt(o.get("drain_sagas_per_s")),
                     fmt(o.get("recovery_x"), 2) + "x / " + fmt(o.get("implied_x"), 2) + "x",
                     f"{fmt((o.get('message_age_peak_p95_ms') or 0) / 1000, 1)} / "
                     f"{fmt((o.get('message_age_peak_max_ms') or 0) / 1000, 1)}",
                     fmt(get(r, "sagas.lost"), 0), fmt(r.get("duplicate_side_effects"), 0),
                     fmt(get(r, "sagad.peak_rss_mb"), 1)])
    p(table(["run", "saga", "rate/s", "pause s", "backlog peak (sagas)", "peak cmd msgs",
             "drain s", "drain sagas/s", "recovery measured / 1+pause/drain", "msg age peak p95 / max s", "lost",
             "duplicates", "sagad peak RSS MB"], rows))
    p("\nRecovery = sagas completed per second while draining / producer rate (the producer keeps "
      "going during the pause and the drain). Drained = in flight back to twice the steady level "
      "plus 0.2 s of load for 2 s in a row.\n")

    # ---- comparison with a baseline build
    cap_b = sorted(load(out, "capB-*.json"), key=rate_of)
    lat_b = load(out, "latB-*.json")
    if cap_b or lat_b:
        best_b = max([rate_of(r) for r in cap_b if r.get("sustained")], default=0)
        p(f"## 4b. This build against the baseline build ({env.get('git_b', '?')}), same run\n")
        rows = [["highest sustained sagas/s", fmt(best, 0), fmt(best_b, 0),
                 fmt(best / best_b if best_b else None, 2) + "x"]]
        for name, key, d in keys:
            a, b = med([get(r, key) for r in lat]), med([get(r, key) for r in lat_b])
            rows.append([f"{name} at {fmt(rate_of(lat[0]), 0) if lat else '?'}/s (median)",
                         fmt(a, d), fmt(b, d), fmt(a / b if a is not None and b else None, 2) + "x"])
        p(table(["figure (ms unless noted)", "this build", "baseline", "this / baseline"], rows))
        p()

    # ---- reliability
    p("## 5. Reliability figures of every run\n")
    rows = []
    for r in every_open:
        rows.append([r["tag"], fmt(get(r, "starts.accepted"), 0), fmt(get(r, "sagas.completed"), 0),
                     fmt(get(r, "sagas.compensated"), 0), fmt(get(r, "sagas.lost"), 0),
                     pct(r.get("dead_letter_ratio"), 3), pct(r.get("duplicate_rate"), 3),
                     pct(get(r, "correlation.effects_share")), pct(get(r, "correlation.events_share"))])
    for r in sync + syncw + syncp:
        rows.append([r["tag"], "-", fmt(get(r, "chains.completed"), 0), fmt(get(r, "chains.compensated"), 0),
                     "-", "-", pct((r.get("duplicate_side_effects") or 0) / r["side_effects"], 3)
                     if r.get("side_effects") else "n/a", pct(r.get("correlation_share")), "-"])
    p(table(["run", "accepted", "completed", "compensated", "lost", "dead-letter ratio",
             "duplicate side effects", "effects with the saga's correlation id",
             "lifecycle events with one"], rows))
    p()

    # ---- seed verification
    steady_age = med([get(r, "message_age_ms.p95") for r in lat])
    peak_run = next((r for r in cap if rate_of(r) == best), None)
    peak_age = get(peak_run, "message_age_ms.p95") if peak_run else None
    ack95 = med([get(r, "start_ack_ms.p95") for r in lat])
    dlq = max([r.get("dead_letter_ratio") or 0 for r in every_open], default=None)
    dup = max([r.get("duplicate_rate") or 0 for r in every_open], default=None)
    corr = min([get(r, "correlation.effects_share", 0) for r in every_open], default=None)
    o_runs = seeds or outages
    o = o_runs[-1] if o_runs else None
    oo = o.get("outage", {}) if o else {}
    full_seed = bool(seeds)
    o_ok = None
    if o:
        budget = 900 if full_seed else 1.5 * (oo.get("pause_s") or 0)
        o_ok = (bool(oo.get("drained")) and (oo.get("drain_s") or 1e9) <= budget
                and (get(o, "sagas.lost", 1) == 0) and (o.get("duplicate_side_effects", 1) == 0))
    rx = oo.get("recovery_x")
    seed_rows = [
        ["request p95 on the synchronous endpoint (start ack)", "< 250 ms", f"{fmt(ack95, 2)} ms",
         verdict(ack95 is not None and ack95 < 250), "latency runs, median of p95"],
        ["throughput vs the synchronous baseline", "higher", f"{fmt(tput_ratio, 2)}x",
         verdict(tput_ratio > 1 if tput_ratio else None), "highest sustained / best sync closed loop"],
        ["message age p95, steady state", "< 30 s", f"{fmt(steady_age)} ms",
         verdict(steady_age < 30000 if steady_age is not None else None), "latency runs"],
        ["message age p95, peak hour", "< 120 s", f"{fmt(peak_age)} ms",
         verdict(peak_age < 120000 if peak_age is not None else None),
         f"capacity step at {best}/s"],
        ["dead-letter ratio", "< 0.5%", pct(dlq, 3), verdict(dlq < 0.005 if dlq is not None else None),
         "worst open-loop run"],
        ["duplicate side-effect rate", "< 0.1%", pct(dup, 3),
         verdict(dup < 0.001 if dup is not None else None), "worst open-loop run"],
        ["pause consumers 10 min, drained within 15 min, nothing lost" if full_seed else
         f"pause consumers {fmt(oo.get('pause_s'), 0)} s (scaled seed), drained within 1.5x the pause, "
         "nothing lost or duplicated",
         "drained, 0 lost", f"drained in {fmt(oo.get('drain_s'), 0)} s, lost {fmt(get(o, 'sagas.lost') if o else None, 0)}",
         verdict(o_ok), (o or {}).get("tag", "no outage run")],
        ["recovery capacity", "> 1.7x producer rate", f"{fmt(rx, 2)}x",
         verdict(rx > 1.7 if rx else None), (o or {}).get("tag", "-")],
        ["processed messages with a correlation id", ">= 99%", pct(corr),
         verdict(corr >= 0.99 if corr is not None else None), "worst open-loop run (participant effects)"],
    ]
    p("## 6. Seed verification (seeds/000_e429557c305d2fa5.txt)\n")
    p(table(["target", "threshold", "measured", "result", "from"], seed_rows))
    if not full_seed:
        p("\nThe outage above is scaled down; `bash bench/run.sh --seed-full` runs the seed's "
          "10-minute pause with its 15-minute budget.")
    p()

    # ---- our goals
    mem_run = max(every_open, key=lambda r: get(r, "outage.backlog_peak_sagas", 0), default=None)
    goals = [
        ["start ack p99 at half the max sustained rate", "< 5 ms", f"{fmt(ack99, 2)} ms",
         verdict(ack99 < 5 if ack99 is not None else None)],
        ["throughput vs synchronous", ">= 5x", f"{fmt(tput_ratio, 2)}x",
         verdict(tput_ratio >= 5 if tput_ratio else None)],
        ["sustained 3-step sagas/s, durable, 2 cores", ">= 3,000", f"{best}",
         verdict(best >= 3000)],
        ["message age p95, steady", "< 50 ms", f"{fmt(steady_age)} ms",
         verdict(steady_age < 50 if steady_age is not None else None)],
        ["dead-letter ratio, healthy participants", "0", pct(dlq, 3), verdict(dlq == 0 if dlq is not None else None)],
        ["duplicate side effects", "0", pct(dup, 3), verdict(dup == 0 if dup is not None else None)],
        ["correlation ids present", "100%", pct(corr), verdict(corr == 1 if corr is not None else None)],
        ["drain after consumers paused", ">= 3x producer rate, nothing lost", f"{fmt(rx, 2)}x",
         verdict(rx >= 3 and o_ok if rx and o_ok is not None else None)],
        ["sagad memory with 100k sagas in flight", "<= 100 MB RSS",
         f"{fmt(get(mem_run, 'sagad.peak_rss_mb'), 1)} MB with a peak of "
         f"{fmt(get(mem_run, 'outage.backlog_peak_sagas'), 0)} in flight" if mem_run else "n/a",
         "n/a (fewer than 100k in flight)" if not mem_run or get(mem_run, "outage.backlog_peak_sagas", 0) < 100000
         else verdict(get(mem_run, "sagad.peak_rss_mb", 1e9) <= 100)],
    ]
    p("## 7. Our goals (shared/design/BENCHMARKS.md)\n")
    p(table(["figure", "goal", "measured", "result"], goals))
    p()

    # ---- profile
    p("## 8. Where sagad spends its time\n")
    shown = 0
    for r in sorted(load(out, "prof-*.json"), key=rate_of):
        tag = r["tag"]
        waits = read_text(os.path.join(out, f"waits-{tag}.txt"))
        pgw = read_text(os.path.join(out, f"pgwait-{tag}.txt"), 12)
        prof = read_text(os.path.join(out, f"profile-{tag}.txt"))
        dso = read_text(os.path.join(out, f"profile-dso-{tag}.txt"), 12)
        pgp = read_text(os.path.join(out, f"profile-pg-{tag}.txt"), 22)
        if not (waits or prof):
            continue
        shown += 1
        p(f"### {tag} ({fmt(rate_of(r), 0)}/s offered, sagad {fmt(get(r, 'sagad.cpu_cores'), 2)} cores, "
          f"its PostgreSQL backend {fmt(get(r, 'processes.pg-backend-of-sagad.cpu_cores'), 2)} cores, "
          f"all of PostgreSQL {fmt(get(r, 'processes.postgres.cpu_cores'), 2)} cores; start ack p95 "
          f"{fmt(get(r, 'start_ack_ms.p95'), 1)} ms, completion p95 {fmt(get(r, 'completion_ms.p95'))} ms, "
          f"{'sustained' if r.get('sustained') else 'not sustained'} while profiled)\n")
        p("```")
        if waits:
            p(waits)
        if pgw:
            p(pgw)
        if dso:
            p("\non-CPU samples by shared object (perf):")
            p(dso)
        if prof:
            syms = [l for l in prof.splitlines() if re.match(r"^\s+\d+\.\d+%", l)][:25]
            p("\non-CPU samples by symbol (perf, --no-children):")
            p("\n".join(syms))
        if pgp:
            p("\nthe PostgreSQL backend serving sagad (perf, by object and symbol):")
            p(pgp)
        p("```\n")
    if not shown:
        p("(no profile taken: run without --no-profile)\n")

    summary = {
        "date": env.get("date"), "commit": env.get("git"), "quick": env.get("quick") == "1",
        "max_sustained_per_s": best, "latency_rate_per_s": rate_of(lat[0]) if lat else None,
        "start_ack_ms": {"p50": ack50, "p95": ack95, "p99": ack99},
        "completion_p50_ms": done50, "message_age_p95_ms": {"steady": steady_age, "peak_hour": peak_age},
        "sync_baseline_per_s": sync_tput, "throughput_ratio": tput_ratio,
        "sync_latency_ms": {"p50": sp50, "p99": sp99},
        "latency_ratio_p50": sp50 / ack50 if sp50 and ack50 else None,
        "latency_ratio_p99": sp99 / ack99 if sp99 and ack99 else None,
        "outage": oo, "dead_letter_ratio_max": dlq, "duplicate_rate_max": dup,
        "correlation_share_min": corr,
        "seed": [{"target": r[0], "threshold": r[1], "measured": r[2], "result": r[3].strip("*")}
                 for r in seed_rows],
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
