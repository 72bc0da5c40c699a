#!/usr/bin/env python3
"""Snapshots of a local NATS cluster and of the processes around it.

Used by bench/scale-100k and bench/nats-user-cost (not a benchmark itself).

  natsmon.py snap --nats URL[,URL...] [--pid NAME=PID ...] > snap.json
      One JSON object: time, per NATS server /varz (mem, cpu, subscriptions,
      msgs, bytes), /subsz (subscriptions, inserts, removes, matches), /routez
      (per route msgs, bytes, subscriptions), the route sockets' kernel byte
      counters (`ss -ti`: everything on the wire, including the RS+/RS-
      interest protocol that /routez does not count), and per process
      CPU time (utime+stime) and RSS from /proc.
  natsmon.py diff A.json B.json
      The change from snapshot A to B as one JSON object (per server and in
      all; CPU as % of one core over the interval).
"""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

TICK = os.sysconf("SC_CLK_TCK")


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def proc(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu_us = (int(fields[11]) + int(fields[12])) * 1_000_000 // TICK
        rss = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
        return {"cpu_us": cpu_us, "rss": rss}
    except (OSError, IndexError, ValueError):
        return None


def route_socket_bytes(ports):
    """Kernel byte counters of every TCP socket with a route port on either end.

    Both ends of each loopback route connection are listed, so the sum of
    bytes_sent over them is the route traffic in both directions, once."""
    if not ports:
        return None
    filt = " or ".join(f"sport = :{p} or dport = :{p}" for p in ports)
    try:
        out = subprocess.run(
            ["ss", "-tinH", "state", "established", f"( {filt} )"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    sent = sockets = 0
    for m in re.finditer(r"bytes_sent:(\d+)", out):
        sent += int(m.group(1))
        sockets += 1
    segs = sum(int(m.group(1)) for m in re.finditer(r"segs_out:(\d+)", out))
    return {"sockets": sockets, "bytes": sent, "segs": segs}


def machine_us():
    """Busy and total CPU time of all cores, µs (from /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    total = sum(v[:8])
    idle = v[3] + v[4]
    return {"busy_us": (total - idle) * 1_000_000 // TICK, "total_us": total * 1_000_000 // TICK}


def snap(nats_urls, pids):
    # Process and machine CPU first, at `time`; the HTTP reads take a while.
    t = time.time()
    procs = {name: proc(pid) for name, pid in pids}
    machine = machine_us()
    servers = {}
    route_ports = []
    for url in nats_urls:
        v = get(url + "/varz")
        s = get(url + "/subsz")
        r = get(url + "/routez")
        c = get(url + "/connz?limit=1024")
        name = v.get("server_name", url)
        port = (v.get("cluster") or {}).get("cluster_port") or (v.get("cluster") or {}).get("port")
        if port:
            route_ports.append(port)
        servers[name] = {
            "url": url,
            "mem": v.get("mem"),
            "cpu_pct_varz": v.get("cpu"),
            "connections": v.get("connections"),
            "subscriptions": v.get("subscriptions"),
            "in_msgs": v.get("in_msgs"),
            "out_msgs": v.get("out_msgs"),
            "in_bytes": v.get("in_bytes"),
            "out_bytes": v.get("out_bytes"),
            "clients": {f'{x.get("name") or "client"}#{x.get("cid")}': x.get("subscriptions")
                        for x in c.get("connections") or []},
            "subsz": {k: s.get(k) for k in (
                "num_subscriptions", "num_cache", "num_inserts", "num_removes", "num_matches")},
            "routes": {
                "count": r.get("num_routes"),
                "in_msgs": sum(x.get("in_msgs", 0) for x in r.get("routes") or []),
                "out_msgs": sum(x.get("out_msgs", 0) for x in r.get("routes") or []),
                "in_bytes": sum(x.get("in_bytes", 0) for x in r.get("routes") or []),
                "out_bytes": sum(x.get("out_bytes", 0) for x in r.get("routes") or []),
                "remote_subscriptions": sum(x.get("subscriptions", 0) for x in r.get("routes") or []),
            },
        }
    return {
        "time": t,
        "servers": servers,
        "route_wire": route_socket_bytes(sorted(set(route_ports))),
        "procs": procs,
        "machine": machine,
    }


def diff(a, b):
    dt = max(1e-9, b["time"] - a["time"])
    out = {"seconds": round(dt, 2), "servers": {}, "procs": {}}
    tot = {"mem_delta": 0, "subscriptions": 0, "subs_delta": 0, "route_out_msgs": 0,
           "route_out_bytes": 0, "inserts": 0, "removes": 0, "cpu_pct": 0.0, "mem": 0}
    for name, sb in b["servers"].items():
        sa = a["servers"].get(name)
        if not sa:
            continue
        d = {
            "mem": sb["mem"],
            "mem_delta": sb["mem"] - sa["mem"],
            "subscriptions": sb["subscriptions"],
            "subs_delta": sb["subscriptions"] - sa["subscriptions"],
            "subsz_subscriptions": sb["subsz"]["num_subscriptions"],
            "inserts": sb["subsz"]["num_inserts"] - sa["subsz"]["num_inserts"],
            "removes": sb["subsz"]["num_removes"] - sa["subsz"]["num_removes"],
            "in_msgs": sb["in_msgs"] - sa["in_msgs"],
            "out_msgs": sb["out_msgs"] - sa["out_msgs"],
            "route_out_msgs": sb["routes"]["out_msgs"] - sa["routes"]["out_msgs"],
            "route_out_bytes": sb["routes"]["out_bytes"] - sa["routes"]["out_bytes"],
            "route_remote_subscriptions": sb["routes"]["remote_subscriptions"],
        }
        pa, pb = a["procs"].get(name), b["procs"].get(name)
        if pa and pb:
            d["cpu_pct"] = round((pb["cpu_us"] - pa["cpu_us"]) / 1e4 / dt, 1)
            d["rss"] = pb["rss"]
            tot["cpu_pct"] += d["cpu_pct"]
        for k in ("mem_delta", "subscriptions", "subs_delta", "route_out_msgs",
                  "route_out_bytes", "inserts", "removes", "mem"):
            tot[k] += d[k]
        out["servers"][name] = d
    tot["cpu_pct"] = round(tot["cpu_pct"], 1)
    out["nats_total"] = tot
    wa, wb = a.get("route_wire"), b.get("route_wire")
    if wa and wb:
        out["route_wire"] = {"bytes": wb["bytes"] - wa["bytes"], "segs": wb["segs"] - wa["segs"],
                             "sockets": wb["sockets"]}
    for name, pb in b["procs"].items():
        pa = a["procs"].get(name)
        if name in b["servers"] or not pb:
            continue
        out["procs"][name] = {
            "rss": pb["rss"],
            "rss_delta": pb["rss"] - pa["rss"] if pa else None,
            "cpu_pct": round((pb["cpu_us"] - pa["cpu_us"]) / 1e4 / dt, 1) if pa else None,
            "cpu_us": pb["cpu_us"] - pa["cpu_us"] if pa else None,
        }
    ma, mb = a.get("machine"), b.get("machine")
    if ma and mb:
        busy = (mb["busy_us"] - ma["busy_us"]) / 1e4 / dt
        mine = sum(v["cpu_pct"] for v in out["servers"].values() if v.get("cpu_pct") is not None) + \
            sum(v["cpu_pct"] for v in out["procs"].values() if v.get("cpu_pct") is not None)
        # Everything on the machine that is not a process listed in the snapshots.
        out["machine"] = {"busy_pct": round(busy, 1), "tracked_pct": round(mine, 1),
                          "others_cpu_pct": round(max(0.0, busy - mine), 1)}
    return out


def main(argv):
    if len(argv) >= 2 and argv[1] == "snap":
        nats, pids, i = [], [], 2
        while i < len(argv):
            if argv[i] == "--nats":
                nats += [u for u in argv[i + 1].split(",") if u]
                i += 2
            elif argv[i] == "--pid":
                name, pid = argv[i + 1].split("=", 1)
                pids.append((name, int(pid)))
                i += 2
            else:
                sys.exit(f"unknown argument {argv[i]}")
        print(json.dumps(snap(nats, pids)))
    elif len(argv) == 4 and argv[1] == "diff":
        with open(argv[2]) as fa, open(argv[3]) as fb:
            print(json.dumps(diff(json.load(fa), json.load(fb))))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
