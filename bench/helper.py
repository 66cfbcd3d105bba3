#!/usr/bin/env python3
"""Helpers for bench/run.sh (stdlib only).

  gen N PROJECT DIR_OBSD DIR_COMPOSE STATE_DIR IMAGE [--changed]
      writes the obsd desired state (DIR_OBSD/stack.yaml, services.yaml) and the
      equivalent docker-compose file (DIR_COMPOSE/docker-compose.yml) for N services.
  floor PROJECT N IMAGE [PARALLEL]
      the floor: raw Docker API calls, no client logic — create the network, the N
      volumes, then create + start the N containers, PARALLEL (8) at a time.
  repair CONTAINER TIMEOUT_S [POLL_S]
      DELETE /containers/NAME?force=1 (what `docker rm -f` does), then GET
      /containers/NAME/json (what `docker inspect` does) every POLL_S (0.02 s) until a
      new container of that name is running; prints the seconds from just before the
      removal, or "timeout".
  wait-daemon URL TIMEOUT_S
      waits until obsd's /metrics shows a successful reconcile and
      applied generation == desired generation.
  idle PID URL SECONDS PROJECT
      samples RSS (/proc/PID/status VmRSS, once a second) and CPU (/proc/PID/stat
      utime+stime delta) over SECONDS; Docker write actions and reconcile passes from
      /metrics deltas; the Docker events of the window that obsd takes as hints
      (GET /events). Prints JSON.
  running PROJECT N
      exits 0 when PROJECT-s001..N all exist and are running.
  freeport
  median X...        (three decimals)
  table RESULTS_TSV NS...   Markdown table.
"""
import http.client
import json
import os
import socket
import statistics
import sys
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

DOCKER_SOCK = "/var/run/docker.sock"
API = "/v1.41"
CMD = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1 & wait; done"]


def width(n):
    return max(3, len(str(n)))


def svc(i, n):
    return "s%0*d" % (width(n), i)


# ---------------------------------------------------------------- generation


def gen(n, project, d_obsd, d_compose, state_dir, image, changed):
    os.makedirs(d_obsd, exist_ok=True)
    os.makedirs(d_compose, exist_ok=True)
    with open(os.path.join(d_obsd, "stack.yaml"), "w") as f:
        f.write(
            "apiVersion: obs.tlsstress.art/v1alpha1\nkind: Stack\n"
            f"metadata: {{name: bench}}\n"
            f"spec: {{project: {project}, defaultNetwork: default, concurrency: 8, "
            f"stateDir: {json.dumps(state_dir)}}}\n"
            "---\napiVersion: obs.tlsstress.art/v1alpha1\nkind: Network\n"
            "metadata: {name: default}\nspec: {}\n"
        )
    docs = []
    comp = ['version: "2.4"', "services:"]
    vols = ["volumes:"]
    for i in range(1, n + 1):
        s = svc(i, n)
        index = str(i) + ("-changed" if changed and i == 1 else "")
        docs.append(
            "apiVersion: obs.tlsstress.art/v1alpha1\nkind: Volume\n"
            f"metadata: {{name: data-{s}}}\nspec: {{}}\n"
        )
        docs.append(
            "apiVersion: obs.tlsstress.art/v1alpha1\nkind: Service\n"
            f"metadata: {{name: {s}}}\nspec:\n"
            f"  image: {image}\n"
            f"  command: {json.dumps(CMD)}\n"
            f"  env: {{INDEX: {json.dumps(index)}}}\n"
            f"  volumes: [{{volume: data-{s}, target: /data}}]\n"
            "  restart: unless-stopped\n"
        )
        comp += [
            f"  {s}:",
            f"    image: {image}",
            f"    command: {json.dumps(CMD)}",
            f"    environment: {{INDEX: {json.dumps(index)}}}",
            f"    volumes: [\"data-{s}:/data\"]",
            "    restart: unless-stopped",
        ]
        vols.append(f"  data-{s}: {{}}")
    tmp = os.path.join(d_obsd, ".services.yaml.tmp")
    with open(tmp, "w") as f:
        f.write("---\n".join(docs))
    os.replace(tmp, os.path.join(d_obsd, "services.yaml"))
    with open(os.path.join(d_compose, "docker-compose.yml"), "w") as f:
        f.write("\n".join(comp + vols) + "\n")


# ---------------------------------------------------------------- docker API


class UnixConn(http.client.HTTPConnection):
    def __init__(self, path=DOCKER_SOCK, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


_local = threading.local()


def call(method, path, body=None, ok=(200, 201, 204, 304)):
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = UnixConn()
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    try:
        conn.request(method, API + path, body=data, headers=headers)
        r = conn.getresponse()
        raw = r.read()
    except (http.client.HTTPException, OSError):
        _local.conn = None
        conn.close()
        raise
    if r.status not in ok:
        raise RuntimeError(f"{method} {path}: {r.status} {raw[:300]!r}")
    return r.status, (json.loads(raw) if raw else None)


def floor(project, n, image, parallel):
    net = f"{project}_default"
    label = {"floorbench.project": project}
    t0 = time.monotonic()
    st, _ = call(
        "POST",
        "/networks/create",
        {"Name": net, "CheckDuplicate": True, "Labels": label},
        ok=(201, 409),
    )
    if st == 409:
        # A network the engine could not remove earlier (stale endpoint count): reuse it.
        print(f"floor {project}: network {net} already existed; reused", file=sys.stderr)
    t1 = time.monotonic()
    with ThreadPoolExecutor(parallel) as ex:
        list(
            ex.map(
                lambda i: call(
                    "POST",
                    "/volumes/create",
                    {"Name": f"{project}_data-{svc(i, n)}", "Labels": label},
                ),
                range(1, n + 1),
            )
        )
    t2 = time.monotonic()

    def one(i):
        s = svc(i, n)
        body = {
            "Image": image,
            "Cmd": CMD,
            "Env": [f"INDEX={i}"],
            "Labels": label,
            "HostConfig": {
                "Mounts": [
                    {"Type": "volume", "Source": f"{project}_data-{s}", "Target": "/data"}
                ],
                "RestartPolicy": {"Name": "unless-stopped"},
                "NetworkMode": net,
            },
            "NetworkingConfig": {"EndpointsConfig": {net: {"Aliases": [s]}}},
        }
        a = time.monotonic()
        _, r = call("POST", f"/containers/create?name={project}-{s}", body)
        b = time.monotonic()
        call("POST", f"/containers/{r['Id']}/start")
        return b - a, time.monotonic() - b

    with ThreadPoolExecutor(parallel) as ex:
        lat = list(ex.map(one, range(1, n + 1)))
    t3 = time.monotonic()
    cr = statistics.mean(x for x, _ in lat)
    st = statistics.mean(y for _, y in lat)
    print(
        f"floor {project}: network {t1 - t0:.3f}s, {n} volumes {t2 - t1:.3f}s, "
        f"{n} containers create+start {t3 - t2:.3f}s (in-process total {t3 - t0:.3f}s; "
        f"mean latency per call: create {cr:.3f}s, start {st:.3f}s; {parallel} in parallel)",
        file=sys.stderr,
    )


def inspect(name):
    try:
        st, r = call("GET", f"/containers/{name}/json", ok=(200, 404))
    except (OSError, http.client.HTTPException):
        return None
    return r if st == 200 else None


def repair(name, timeout_s, poll):
    before = inspect(name)
    if not before or not before["State"]["Running"]:
        print("not-running-before")
        return 1
    old = before["Id"]
    t0 = time.monotonic()
    call("DELETE", f"/containers/{name}?force=1")
    deadline = t0 + timeout_s
    while time.monotonic() < deadline:
        c = inspect(name)
        if c and c["Id"] != old and c["State"]["Running"]:
            print(f"{time.monotonic() - t0:.3f}")
            return 0
        time.sleep(poll)
    print("timeout")
    return 2


def running(project, n):
    for i in range(1, n + 1):
        c = inspect(f"{project}-{svc(i, n)}")
        if not c or not c["State"]["Running"]:
            return 1
    return 0


# ---------------------------------------------------------------- metrics


def scrape(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


def total(m, prefix):
    return sum(v for k, v in m.items() if k == prefix or k.startswith(prefix + "{"))


def wait_daemon(url, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            m = scrape(url)
            ok = m.get('obsd_reconcile_total{result="success"}', 0)
            des = m.get("obsd_desired_state_generation", -1)
            app = m.get("obsd_applied_generation", -2)
            if ok >= 1 and des == app and des > 0:
                return 0
        except OSError:
            pass
        time.sleep(0.2)
    return 1


def proc_cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def hint_events(project, since, until):
    """Docker events in [since, until] that obsd's event stream takes as reconcile hints
    (container events carrying its stack label, every network and volume event)."""
    filters = json.dumps({"type": ["container", "network", "volume"]})
    q = urllib.parse.urlencode({"since": int(since), "until": int(until) + 1, "filters": filters})
    conn = UnixConn(timeout=30)
    conn.request("GET", f"{API}/events?{q}")
    r = conn.getresponse()
    hints = ours = 0
    kinds = {}
    for line in r.read().decode().splitlines():
        if not line.strip():
            continue
        e = json.loads(line)
        attrs = (e.get("Actor") or {}).get("Attributes") or {}
        stack = attrs.get("obs.tlsstress.art/stack")
        if e.get("Type") == "container" and stack is None:
            continue
        hints += 1
        name = attrs.get("name", "")
        if stack == project or name.startswith(project + "_") or name.startswith(project + "-"):
            ours += 1
        k = f'{e.get("Type")} {e.get("Action", "").split(":")[0]}'
        kinds[k] = kinds.get(k, 0) + 1
    conn.close()
    return hints, ours, kinds


def idle(pid, url, seconds, project):
    hz = os.sysconf("SC_CLK_TCK")
    t_start = time.time()
    m0 = scrape(url)
    c0, w0 = proc_cpu_ticks(pid), time.monotonic()
    rss = []
    end = w0 + seconds
    while True:
        rss.append(proc_rss_kib(pid))
        now = time.monotonic()
        if now >= end:
            break
        time.sleep(min(1.0, end - now))
    c1, w1 = proc_cpu_ticks(pid), time.monotonic()
    m1 = scrape(url)
    t_end = time.time()
    try:
        hints, ours, kinds = hint_events(project, t_start, t_end)
    except (OSError, http.client.HTTPException, ValueError):
        hints, ours, kinds = -1, -1, {}
    res = {
        "seconds": round(w1 - w0, 2),
        "cpu_pct": round(100.0 * (c1 - c0) / hz / (w1 - w0), 3),
        "cpu_seconds": (c1 - c0) / hz,
        "cpu_ticks": c1 - c0,
        "rss_mib_max": round(max(rss) / 1024, 1),
        "rss_mib_last": round(rss[-1] / 1024, 1),
        "rss_mib_metric": round(m1.get("process_resident_memory_bytes", 0) / 2**20, 1),
        "write_actions": int(total(m1, "obsd_actions_total") - total(m0, "obsd_actions_total")),
        "reconcile_passes": int(
            total(m1, "obsd_reconcile_total") - total(m0, "obsd_reconcile_total")
        ),
        "hint_events": hints,
        "hint_events_own_project": ours,
        "hint_event_kinds": kinds,
    }
    print(json.dumps(res))
    return 0


# ---------------------------------------------------------------- table


def num(cell):
    try:
        return float(cell.split()[0])
    except (ValueError, IndexError):
        return None


def table(tsv, ns):
    rows = []
    with open(tsv) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 5:
                rows.append(parts)
    order = []
    for r in rows:
        if r[0] not in order:
            order.append(r[0])
    out = [
        "| metric | N | obsd | docker-compose | floor (raw API) | obsd / compose |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for metric in order:
        for n in ns:
            for r in rows:
                if r[0] == metric and r[1] == n:
                    a, b = num(r[2]), num(r[3])
                    ratio = f"{a / b:.2f}" if a is not None and b else "—"
                    out.append(f"| {metric} | {n} | {r[2]} | {r[3]} | {r[4]} | {ratio} |")
    print("\n".join(out))


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "gen":
        changed = "--changed" in args
        a = [x for x in args if x != "--changed"]
        gen(int(a[0]), a[1], a[2], a[3], a[4], a[5], changed)
        return 0
    if cmd == "floor":
        floor(args[0], int(args[1]), args[2], int(args[3]) if len(args) > 3 else 8)
        return 0
    if cmd == "repair":
        return repair(args[0], float(args[1]), float(args[2]) if len(args) > 2 else 0.02)
    if cmd == "wait-daemon":
        return wait_daemon(args[0], float(args[1]))
    if cmd == "idle":
        return idle(int(args[0]), args[1], float(args[2]), args[3])
    if cmd == "running":
        return running(args[0], int(args[1]))
    if cmd == "freeport":
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
        s.close()
        return 0
    if cmd == "median":
        xs = [float(x) for x in args]
        print(f"{statistics.median(xs):.3f}" if xs else "")
        return 0
    if cmd == "table":
        table(args[0], args[1:])
        return 0
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv))
