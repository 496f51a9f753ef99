#!/usr/bin/env python3
"""bench/idle.py - memory per idle SMTP session.

Opens N concurrent SMTP sessions to HOST:PORT; each reads the 220 banner, sends
EHLO, reads the whole 250 reply, then stays idle. Reports how many sessions got
that far, then the server's memory (sum of Rss and of Pss from
/proc/PID/smaps_rollup over the server's processes) before any session and with
all sessions held, divided by N; then closes every session.

The server's processes are given by --cgroup DIR (every process in it), --root PID
(that process and its descendants) or --pids "P1 P2 ...".

  bench/idle.py --port 42527 --sessions 10000 --cgroup /sys/fs/cgroup/unified/x
  bench/idle.py --port 42527 --sessions 1000 --root $(cat queue/pid/master.pid)

The client raises its own RLIMIT_NOFILE (to 65536, or its hard limit); the server
needs one descriptor per session too (bench/idle.sh starts it under ulimit -n).
Output: human-readable lines on stderr, one "key=value ..." line on stdout.
"""
import argparse
import asyncio
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def server_mem(a):
    sel = {"cgroup": a.cgroup, "root": a.root, "pids": a.pids or ""}
    return benchlib.mem_kb(benchlib.get_pids(sel))


async def read_reply(reader, code):
    """Read one (possibly multi-line) reply; True if it has the expected code."""
    while True:
        line = await reader.readline()
        if not line:
            return False
        if len(line) >= 4 and line[3:4] == b" ":
            return line[:3] == code
        if len(line) < 4 or line[3:4] != b"-":
            return False


async def open_session(a, sem, sessions, errors):
    async with sem:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(a.host, a.port), a.step_timeout)
        except Exception as e:  # noqa: BLE001
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            return
        try:
            ok = await asyncio.wait_for(read_reply(r, b"220"), a.step_timeout)
            if ok:
                w.write(b"EHLO idle.example.net\r\n")
                await w.drain()
                ok = await asyncio.wait_for(read_reply(r, b"250"), a.step_timeout)
            if not ok:
                errors["bad-reply"] = errors.get("bad-reply", 0) + 1
                w.close()
                return
            sessions.append((r, w))
        except Exception as e:  # noqa: BLE001
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            w.close()


async def run(a):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(65536, hard) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile < a.sessions + 50:
        print(f"warning: client RLIMIT_NOFILE={nofile} < sessions", file=sys.stderr)

    base = server_mem(a)
    sem = asyncio.Semaphore(a.parallel_connects)
    sessions, errors = [], {}
    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(open_session(a, sem, sessions, errors)) for _ in range(a.sessions)]
    done, pending = await asyncio.wait(tasks, timeout=a.timeout)
    for t in pending:
        t.cancel()
    if pending:
        errors["overall-timeout"] = len(pending)
    t_open = time.monotonic() - t0
    await asyncio.sleep(a.settle)
    # are they still open? a server that dropped them sends EOF or a 421
    alive = sum(1 for r, w in sessions if not r.at_eof() and not w.is_closing())
    held = server_mem(a)
    n = max(alive, 1)
    res = {
        "requested": a.sessions,
        "established": len(sessions),
        "alive_after_settle": alive,
        "open_s": round(t_open, 2),
        "server_procs_before": base[2],
        "server_procs": held[2],
        "rss_kb_before": base[0],
        "pss_kb_before": base[1],
        "rss_kb": held[0],
        "pss_kb": held[1],
        "rss_kb_per_session": round(held[0] / n, 1),
        "pss_kb_per_session": round(held[1] / n, 1),
        "delta_rss_kb_per_session": round((held[0] - base[0]) / n, 1),
        "delta_pss_kb_per_session": round((held[1] - base[1]) / n, 1),
        "errors": ",".join(f"{k}:{v}" for k, v in sorted(errors.items())) or "none",
    }
    print(f"sessions: {len(sessions)}/{a.sessions} established in {t_open:.1f}s, "
          f"{alive} still open after {a.settle}s; errors: {res['errors']}", file=sys.stderr)
    print(f"server: {base[2]} -> {held[2]} processes; RSS {base[0]/1024:.1f} -> {held[0]/1024:.1f} MB, "
          f"PSS {base[1]/1024:.1f} -> {held[1]/1024:.1f} MB", file=sys.stderr)
    print(f"per session: PSS {res['pss_kb_per_session']} KiB total/N, {res['delta_pss_kb_per_session']} KiB delta/N; "
          f"RSS {res['rss_kb_per_session']} KiB total/N, {res['delta_rss_kb_per_session']} KiB delta/N",
          file=sys.stderr)
    print(" ".join(f"{k}={v}" for k, v in res.items()))
    for r, w in sessions:
        w.close()
    await asyncio.sleep(0.5)
    return 0 if len(sessions) == a.sessions else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sessions", "-n", type=int, default=10000)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--cgroup", help="cgroup directory holding the server's processes")
    g.add_argument("--root", help="PID of the server's top process (its descendants count too)")
    g.add_argument("--pids", help="space-separated PIDs of the server's processes")
    p.add_argument("--parallel-connects", type=int, default=200,
                   help="sessions being set up at once (default 200)")
    p.add_argument("--step-timeout", type=float, default=30, help="per connect/reply timeout (s)")
    p.add_argument("--timeout", type=float, default=300, help="overall time to open all sessions (s)")
    p.add_argument("--settle", type=float, default=2, help="seconds to wait before measuring")
    a = p.parse_args()
    return asyncio.run(run(a))


if __name__ == "__main__":
    sys.exit(main())
