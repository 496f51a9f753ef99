#!/usr/bin/env python3
"""Helpers shared by the Petrel benchmarks (bench/ingest.sh, bench/idle.sh).

Subcommands:
  pids    --cgroup DIR | --root PID          print the server's PIDs, one a line
  cpu     --cgroup DIR | --root PID          print CPU microseconds used so far
  mem     --cgroup DIR | --root PID | --pids "P1 P2"
                                             print "rss_kb pss_kb nprocs" (sum now)
  sample  --cgroup DIR | --root PID --out FILE [--interval S]
                                             sample the memory sum until SIGTERM/SIGINT,
                                             then write "peak_rss_kb peak_pss_kb max_nprocs"
  summarize FILE                             median table + ratios from ingest.sh's TSV
  sinkcount FILE                             messages smtp-sink -c has received so far
  sinkwait  --file FILE --count N [--timeout S] [--poll S]
                                             wait until smtp-sink -c (stdout in FILE) has
                                             received N messages; print the epoch time
                                             (seconds) it saw the count reached, or
                                             "timeout COUNT"; exit 0 / 1
  summarize-relay FILE                       median table + ratios from relay.sh's TSV
  summarize-variants FILE --pairs "A/B ..."  median [min-max] table per concurrency and
                                             variant from filters.sh's TSV, then the
                                             ratios A / B of the medians
  qsample   --pid QMGR_PID --root PID --qdir DIR --out FILE [--interval S] [--sink FILE]
                                             time series until SIGTERM: seconds since start,
                                             queue manager VmRSS/VmHWM, server tree PSS,
                                             files in incoming/ active/ deferred/,
                                             sink count, queue manager CPU s (utime+stime);
                                             one TSV line per interval

CPU: with --cgroup, cpu.stat usage_usec (cgroup v2) or cpuacct.usage (cgroup v1):
counts every process that ever lived in the cgroup. With --root (fallback), the
sum over the live process tree of the run time in /proc/PID/schedstat plus the
cutime+cstime of each (children that exited and were reaped by a live parent;
those two are tick-sampled, so short-lived children are undercounted).
Memory: Rss and Pss from /proc/PID/smaps_rollup (falls back to smaps).
"""
import os
import signal
import statistics
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _stat_fields(pid):
    s = _read(f"/proc/{pid}/stat")
    if s is None:
        return None
    # comm may contain spaces/parens: split after the last ')'
    rest = s[s.rfind(")") + 2:].split()
    return rest  # rest[0] = state (field 3), rest[1] = ppid (field 4)


def tree_pids(root):
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        f = _stat_fields(d)
        if f is None:
            continue
        children.setdefault(int(f[1]), []).append(int(d))
    out, todo = [], [int(root)]
    while todo:
        p = todo.pop()
        if not os.path.exists(f"/proc/{p}"):
            continue
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cgroup_pids(cg):
    s = _read(os.path.join(cg, "cgroup.procs")) or ""
    return [int(x) for x in s.split()]


def get_pids(args):
    if args.get("cgroup"):
        return cgroup_pids(args["cgroup"])
    if args.get("root"):
        return tree_pids(args["root"])
    return [int(x) for x in args.get("pids", "").split()]


def cpu_usec(args):
    if args.get("cgroup"):
        cg = args["cgroup"]
        for line in (_read(os.path.join(cg, "cpu.stat")) or "").splitlines():
            k, _, v = line.partition(" ")
            if k == "usage_usec":          # cgroup v2
                return int(v)
        v = _read(os.path.join(cg, "cpuacct.usage"))
        if v is not None:                  # cgroup v1 cpuacct, nanoseconds
            return int(v) // 1000
        raise SystemExit("benchlib: no usage_usec in cpu.stat nor cpuacct.usage in " + cg)
    total = 0
    for p in tree_pids(args["root"]):
        f = _stat_fields(p)
        if f is None:
            continue
        # live process: exact run time from schedstat (ns); utime/stime are
        # tick-sampled and undercount short bursts badly (seen: -40%).
        ss = _read(f"/proc/{p}/schedstat")
        if ss:
            total += int(ss.split()[0]) // 1000
        else:
            total += (int(f[11]) + int(f[12])) * 1000000 // CLK_TCK
        # children that exited and were reaped: only tick-based cutime/cstime exist
        total += (int(f[13]) + int(f[14])) * 1000000 // CLK_TCK
    return total


def mem_kb(pids):
    rss = pss = n = 0
    for p in pids:
        s = _read(f"/proc/{p}/smaps_rollup")
        if s is None:
            s = _read(f"/proc/{p}/smaps")
        if s is None:
            continue
        r = q = 0
        for line in s.splitlines():
            if line.startswith("Rss:"):
                r += int(line.split()[1])
            elif line.startswith("Pss:"):
                q += int(line.split()[1])
        if r == 0 and q == 0:
            continue  # zombie / kernel thread
        rss += r
        pss += q
        n += 1
    return rss, pss, n


def sample(args):
    interval = float(args.get("interval", "0.5"))
    out = args["out"]
    peak = [0, 0, 0]
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    while not stop:
        r, p, n = mem_kb(get_pids(args))
        peak = [max(peak[0], r), max(peak[1], p), max(peak[2], n)]
        with open(out + ".tmp", "w") as f:
            f.write(f"{peak[0]} {peak[1]} {peak[2]}\n")
        os.replace(out + ".tmp", out)
        time.sleep(interval)


def summarize(path):
    # columns: server size_kib conc rep wall_s msgs_per_s cpu_s cpu_s_per_1000 peak_pss_mb peak_rss_mb max_procs queued expected status
    rows = []
    with open(path) as f:
        hdr = f.readline().rstrip("\n").split("\t")
        for line in f:
            rows.append(dict(zip(hdr, line.rstrip("\n").split("\t"))))
    cells = {}
    for r in rows:
        cells.setdefault((int(r["size_kib"]), int(r["conc"])), {}).setdefault(r["server"], []).append(r)

    def med(rs, key):
        vals = [float(r[key]) for r in rs if r["status"] == "ok" and r[key] not in ("", "-")]
        return statistics.median(vals) if vals else None

    def fmt(v, d=1):
        return "-" if v is None else f"{v:.{d}f}"

    def ratio(a, b):
        return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"

    lines = []
    lines.append("| size | conc | Postfix msg/s | Petrel msg/s | ratio | Postfix CPU s/1000 | Petrel CPU s/1000 | ratio | Postfix peak PSS MB | Petrel peak PSS MB | runs ok (pf/pt) |")
    lines.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |")
    for (size, conc) in sorted(cells):
        c = cells[(size, conc)]
        pf, pt = c.get("postfix", []), c.get("petrel", [])
        a, b = med(pf, "msgs_per_s"), med(pt, "msgs_per_s")
        ca, cb = med(pf, "cpu_s_per_1000"), med(pt, "cpu_s_per_1000")
        ma, mb = med(pf, "peak_pss_mb"), med(pt, "peak_pss_mb")
        okpf = sum(1 for r in pf if r["status"] == "ok")
        okpt = sum(1 for r in pt if r["status"] == "ok")
        lines.append(f"| {size} KiB | {conc} | {fmt(a)} | {fmt(b)} | {ratio(b, a)} | {fmt(ca, 2)} | {fmt(cb, 2)} | {ratio(cb, ca)} | {fmt(ma)} | {fmt(mb)} | {okpf}/{len(pf)} {okpt}/{len(pt)} |")
    print("\n".join(lines))
    print()
    print("Medians over the runs marked ok; ratio = Petrel / Postfix (msg/s: higher is better for Petrel; CPU: lower is better).")


def sink_count(path):
    """Last "mesg=N" counter written by smtp-sink -c (lines end in \\r)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 512))
            tail = f.read()
    except OSError:
        return 0
    i = tail.rfind(b"mesg=")
    if i < 0:
        return 0
    j = i + 5
    while j < len(tail) and tail[j:j + 1].isdigit():
        j += 1
    if j == len(tail):            # counter being written: use the previous one
        k = tail.rfind(b"mesg=", 0, i)
        if k < 0:
            return 0
        i, j = k, k + 5
        while j < len(tail) and tail[j:j + 1].isdigit():
            j += 1
    return int(tail[i + 5:j] or 0)


def sink_wait(args):
    want = int(args["count"])
    timeout = float(args.get("timeout", "600"))
    poll = float(args.get("poll", "0.05"))
    end = time.time() + timeout
    n = 0
    while time.time() < end:
        n = sink_count(args["file"])
        if n >= want:
            print(f"{time.time():.3f}")
            return 0
        time.sleep(poll)
    print(f"timeout {n}")
    return 1


def summarize_relay(path):
    rows = []
    with open(path) as f:
        hdr = f.readline().rstrip("\n").split("\t")
        for line in f:
            rows.append(dict(zip(hdr, line.rstrip("\n").split("\t"))))
    cells = {}
    for r in rows:
        cells.setdefault((int(r["size_kib"]), int(r["conc"])), {}).setdefault(r["server"], []).append(r)

    def med(rs, key):
        vals = [float(r[key]) for r in rs if r["status"] == "ok" and r[key] not in ("", "-")]
        return statistics.median(vals) if vals else None

    def fmt(v, d=1):
        return "-" if v is None else f"{v:.{d}f}"

    def ratio(a, b):
        return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"

    print("| size | conc | Postfix msg/s | Petrel msg/s | ratio | Postfix CPU s/1000 | Petrel CPU s/1000 | ratio | Postfix peak PSS MB | Petrel peak PSS MB | runs ok (pf/pt) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |")
    for (size, conc) in sorted(cells):
        c = cells[(size, conc)]
        pf, pt = c.get("postfix", []), c.get("petrel", [])
        a, b = med(pf, "msgs_per_s"), med(pt, "msgs_per_s")
        ca, cb = med(pf, "cpu_s_per_1000"), med(pt, "cpu_s_per_1000")
        ma, mb = med(pf, "peak_pss_mb"), med(pt, "peak_pss_mb")
        okpf = sum(1 for r in pf if r["status"] == "ok")
        okpt = sum(1 for r in pt if r["status"] == "ok")
        print(f"| {size} KiB | {conc} | {fmt(a)} | {fmt(b)} | {ratio(b, a)} | {fmt(ca, 2)} | {fmt(cb, 2)} | {ratio(cb, ca)} | {fmt(ma)} | {fmt(mb)} | {okpf}/{len(pf)} {okpt}/{len(pt)} |")
    print()
    print("msg/s = N / (time from the client's first connection until the sink has received the N-th message);")
    print("medians over the runs marked ok; ratio = Petrel / Postfix (msg/s: higher is better for Petrel; CPU: lower is better).")


def summarize_variants(path, pairs):
    rows = []
    with open(path) as f:
        hdr = f.readline().rstrip("\n").split("\t")
        for line in f:
            rows.append(dict(zip(hdr, line.rstrip("\n").split("\t"))))
    order = []
    for r in rows:
        if r["variant"] not in order:
            order.append(r["variant"])
    cells = {}
    for r in rows:
        cells.setdefault(int(r["conc"]), {}).setdefault(r["variant"], []).append(r)

    def vals(rs, key):
        return [float(r[key]) for r in rs if r["status"] == "ok" and r[key] not in ("", "-")]

    def med(rs, key):
        v = vals(rs, key)
        return statistics.median(v) if v else None

    def spread(rs, key, d):
        v = vals(rs, key)
        if not v:
            return "-"
        m = statistics.median(v)
        return f"{m:.{d}f} ({min(v):.{d}f}-{max(v):.{d}f})" if len(v) > 1 else f"{m:.{d}f}"

    print("| conc | variant | msg/s median (min-max) | server CPU s/1000 | peers CPU s/1000 | server peak PSS MB | queued / filtered (per run) | runs ok |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | --- | :---: |")
    for conc in sorted(cells):
        for v in order:
            rs = cells[conc].get(v, [])
            if not rs:
                continue
            qf = " ".join(f"{r['queued']}/{r['filtered']}" for r in rs)
            ok = sum(1 for r in rs if r["status"] == "ok")
            print(f"| {conc} | {v} | {spread(rs, 'msgs_per_s', 1)} | {spread(rs, 'cpu_s_per_1000', 2)} | "
                  f"{spread(rs, 'peer_cpu_s_per_1000', 2)} | {spread(rs, 'peak_pss_mb', 1)} | {qf} | {ok}/{len(rs)} |")
    print()
    print("Ratios of the medians (A / B; msg/s: above 1 = A faster; CPU: below 1 = A cheaper):")
    print()
    print("| conc | A / B | msg/s | server CPU | server + peers CPU |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for conc in sorted(cells):
        for pair in pairs.split():
            a, _, b = pair.partition("/")
            ra, rb = cells[conc].get(a, []), cells[conc].get(b, [])
            if not ra or not rb:
                continue

            def ratio(x, y):
                return "-" if x is None or y is None or y == 0 else f"{x / y:.2f}"

            ta = None if med(ra, "cpu_s_per_1000") is None else med(ra, "cpu_s_per_1000") + (med(ra, "peer_cpu_s_per_1000") or 0)
            tb = None if med(rb, "cpu_s_per_1000") is None else med(rb, "cpu_s_per_1000") + (med(rb, "peer_cpu_s_per_1000") or 0)
            print(f"| {conc} | {a} / {b} | {ratio(med(ra, 'msgs_per_s'), med(rb, 'msgs_per_s'))} | "
                  f"{ratio(med(ra, 'cpu_s_per_1000'), med(rb, 'cpu_s_per_1000'))} | {ratio(ta, tb)} |")
    counts = {}
    for r in rows:
        if r.get("peer_counts") not in (None, "", "-"):
            counts.setdefault((int(r["conc"]), r["variant"]), []).append(r["peer_counts"])
    if counts:
        print()
        print("Peer counters per run (what the peers saw):")
        print()
        for (conc, v), cs in sorted(counts.items()):
            print(f"- conc {conc}, {v}: " + "; ".join(cs))


def _status_kb(pid, key):
    for line in (_read(f"/proc/{pid}/status") or "").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _count_files(d):
    n = 0
    try:
        with os.scandir(d) as it:
            for e in it:
                if not e.name.startswith("."):
                    n += 1
    except OSError:
        return -1
    return n


def qsample(args):
    interval = float(args.get("interval", "1"))
    pid, qdir, out = args["pid"], args["qdir"], args["out"]
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    t0 = time.time()
    with open(out, "a", buffering=1) as f:
        f.write("t_s\tqmgr_rss_kb\tqmgr_hwm_kb\ttree_pss_kb\tincoming\tactive\tdeferred\tsink\tqmgr_cpu_s\n")
        while not stop:
            t = time.time() - t0
            rss, hwm = _status_kb(pid, "VmRSS"), _status_kb(pid, "VmHWM")
            pss = mem_kb(tree_pids(args["root"]))[1] if args.get("root") else 0
            counts = [_count_files(os.path.join(qdir, d)) for d in ("incoming", "active", "deferred")]
            sink = sink_count(args["sink"]) if args.get("sink") else 0
            st = _stat_fields(pid)
            cpu = (int(st[11]) + int(st[12])) / CLK_TCK if st else 0.0
            f.write(f"{t:.1f}\t{rss}\t{hwm}\t{pss}\t{counts[0]}\t{counts[1]}\t{counts[2]}\t{sink}\t{cpu:.2f}\n")
            end = time.time() + max(0.0, interval - (time.time() - t0 - t))
            while not stop and time.time() < end:
                time.sleep(0.1)


def parse(argv):
    a = {}
    i = 0
    while i < len(argv):
        k = argv[i]
        if k.startswith("--") and i + 1 < len(argv):
            a[k[2:]] = argv[i + 1]
            i += 2
        else:
            a.setdefault("_", []).append(k)
            i += 1
    return a


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    cmd, args = sys.argv[1], parse(sys.argv[2:])
    if cmd == "pids":
        print("\n".join(str(p) for p in get_pids(args)))
    elif cmd == "cpu":
        print(cpu_usec(args))
    elif cmd == "mem":
        print("%d %d %d" % mem_kb(get_pids(args)))
    elif cmd == "sample":
        sample(args)
    elif cmd == "summarize":
        summarize(args["_"][0])
    elif cmd == "sinkcount":
        print(sink_count(args["_"][0]))
    elif cmd == "sinkwait":
        return sink_wait(args)
    elif cmd == "qsample":
        qsample(args)
    elif cmd == "summarize-variants":
        summarize_variants(args["_"][0], args.get("pairs", ""))
    elif cmd == "summarize-relay":
        summarize_relay(args["_"][0])
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
