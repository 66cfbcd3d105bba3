#!/usr/bin/env python3
"""Load loop and timing helper for bench/rollout.sh (stdlib only).

  load ADDR PATH STOPFILE OUT   GET http://ADDR/PATH every 10 ms until STOPFILE exists;
                                write {"ok", "failed", "samples": [[t_ns, ok], ...]} to OUT
  summary OUT                   print "ok failed"
  back_after OUT T_NS           first successful request at or after T_NS: print the
                                delay in seconds (or "never")
  outage OUT                    longest run of failures: from the last success before it
                                to the first success after it, seconds
"""
import json
import os
import socket
import sys
import time


def get(addr, path):
    host, port = addr.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2) as s:
            s.settimeout(2)
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n".encode())
            buf = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        status = buf.split(b"\r\n", 1)[0].split()
        return len(status) > 1 and status[1].startswith(b"2")
    except OSError:
        return False


def load(addr, path, stopfile, out):
    samples = []
    while not os.path.exists(stopfile):
        samples.append([time.time_ns(), get(addr, path)])
        time.sleep(0.01)
    ok = sum(1 for _, o in samples if o)
    with open(out, "w") as f:
        json.dump({"ok": ok, "failed": len(samples) - ok, "samples": samples}, f)


def main():
    cmd = sys.argv[1]
    if cmd == "load":
        load(*sys.argv[2:6])
        return
    d = json.load(open(sys.argv[2]))
    if cmd == "summary":
        print(d["ok"], d["failed"])
    elif cmd == "back_after":
        t = int(sys.argv[3])
        ok = [s for s, o in d["samples"] if o and s >= t]
        print(f"{(ok[0] - t) / 1e9:.2f}" if ok else "never")
    elif cmd == "outage":
        best, last_ok, in_fail = 0.0, None, False
        for s, o in d["samples"]:
            if o:
                if in_fail and last_ok is not None:
                    best = max(best, (s - last_ok) / 1e9)
                last_ok, in_fail = s, False
            else:
                in_fail = True
        print(f"{best:.2f}")


if __name__ == "__main__":
    main()
