#!/usr/bin/env bash
# Benchmark of obsd's backup (not a test: it prints figures side by side).
#
#   bench/backup.sh
#
# Part 1: a volume of BENCH_MB MiB of mixed files (many small, a few large; half of each
# file random, half text, like compressed-but-not-quite TSDB data) backed up into moto's
# S3 server on 127.0.0.1:
#   floor          tar -c of the volume's directory | zstd -3 > /dev/null (no upload at all)
#   floor+PUTs     the same stream cut into 8 MiB objects, each PUT by curl (one at a
#                  time): obsd's object size, nothing but the upload added
#   floor+aws cp   the same stream into `aws s3 cp -` (multipart, 8 MiB parts, threads)
#   engine alone   the engine's archive endpoint (what obsd reads) into /dev/null by curl
#   obsd           obsctl backup run (the Job body: engine archive stream → chunks →
#                  zstd → PUT), then its time split from the job's textfile
#                  (backup_r2_source_stage_seconds)
#   obsd → sink    the same run into a sink that answers every PUT and stores nothing:
#                  obsd's own cost without moto's
#   legacy         docker run … tar | zstd -3 > file, then an upload with the AWS CLI
# plus obsd's restore of it into a new volume, and moto alone: PUTs of as many objects
# of the same sizes as obsd stored, from boto3, one at a time and three at once.
# Wall time and peak RSS (GNU time).
#
# Part 2: DAYS days of a TSDB-like volume (BASE_MB of blocks, each day BLOCKS new
# immutable BLOCK_MB blocks and a rewritten WAL_MB WAL), backed up daily with the shipped
# 7-day lock (`--as-of` simulates the days): the bucket's bytes after the last day next
# to the sum of DAYS daily full tarballs and to one full copy.
#
# Needs docker, zstd, GNU time (/usr/bin/time), python3 with moto[server] and boto3
# (tests/setup.sh), the AWS CLI (else boto3's upload_file, the same transfer code), and
# a built obsctl: OBSD_BIN_DIR (default target/release; `cargo build --release`).
# Settings: BENCH_MB (1024), LEGACY (1; 0 skips the legacy line), DAYS (14; 0 skips part 2), BASE_MB (256), BLOCKS (2), BLOCK_MB (24),
# WAL_MB (16). Everything it creates is removed at the end, on error and on Ctrl-C.
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
BIN=${OBSD_BIN_DIR:-${CARGO_TARGET_DIR:-$REPO/target}/release}
OBSCTL=$BIN/obsctl
MB=${BENCH_MB:-1024}
DAYS=${DAYS:-14}
BASE_MB=${BASE_MB:-256}
BLOCKS=${BLOCKS:-2}
BLOCK_MB=${BLOCK_MB:-24}
WAL_MB=${WAL_MB:-16}
IMAGE=${BENCH_IMAGE:-obsd-bench/busybox:1}
P=obsdbench-bk$$
WORK=$(mktemp -d)
MOTO_PID=
SINK_PID=

[ -x "$OBSCTL" ] || { echo "no obsctl at $OBSCTL (cargo build --release, or set OBSD_BIN_DIR)" >&2; exit 1; }

cleanup() {
    docker rm -f "$P-user" "$P-tsdb-user" "$P-probe" >/dev/null 2>&1 || true
    docker rm -f "obsd-backup-$P-data" "obsd-backup-$P-tsdb" >/dev/null 2>&1 || true
    docker volume rm -f "$P-data" "$P-tsdb" "$P-restored" >/dev/null 2>&1 || true
    [ -n "$MOTO_PID" ] && kill "$MOTO_PID" 2>/dev/null || true
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    mkdir "$WORK/img" && cp /bin/busybox "$WORK/img/"
    printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n' >"$WORK/img/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" "$WORK/img" >/dev/null
fi

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
python3 -m moto.server -H 127.0.0.1 -p "$PORT" >/dev/null 2>&1 &
MOTO_PID=$!
for _ in $(seq 100); do curl -sf "$URL/moto-api/" >/dev/null && break; sleep 0.1; done
for b in obsd legacy tsdb floor floorcp plain; do curl -sf -X PUT "$URL/$b" >/dev/null; done

# The sink: an S3 endpoint that reads every PUT's body and keeps nothing (empty listings,
# no object found), so a run into it is obsd's own cost: engine stream, hash, zstd, HTTP.
SINK_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SINK=http://127.0.0.1:$SINK_PORT
python3 - "$SINK_PORT" <<'EOF' >/dev/null 2>&1 &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def reply(self, code, body=b""):
        self.send_response(code); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_PUT(self):
        n = int(self.headers.get("Content-Length", 0))
        while n > 0:
            n -= len(self.rfile.read(min(n, 1 << 20)))
        self.reply(200)
    def do_GET(self):
        if "list-type=2" in self.path:
            self.reply(200, b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>')
        else:
            self.reply(404, b"<Error><Code>NoSuchKey</Code></Error>")
    def do_DELETE(self): self.reply(204)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
SINK_PID=$!
for _ in $(seq 100); do curl -s "$SINK/x?list-type=2" >/dev/null && break; sleep 0.1; done
export AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=benchsecret AWS_DEFAULT_REGION=us-east-1

# Mixed files as a tar stream on stdin of a container that unpacks it into the volume.
gen() { # $1 volume, $2 MiB, $3 seed
    python3 - "$2" "$3" <<'EOF' | docker run --rm -i -v "$1:/data" "$IMAGE" tar -x -C /data
import io, os, random, sys, tarfile
mb, seed = int(sys.argv[1]), int(sys.argv[2])
rnd = random.Random(seed)
text = b"".join(b"series{job=\"node\",instance=\"host-%d\"} %d\n" % (i, i * 7) for i in range(4000))
def content(n):
    half = n // 2
    return os.urandom(half) + (text * (n // len(text) + 1))[: n - half]
out = tarfile.open(fileobj=sys.stdout.buffer, mode="w|")
def add(name, n):
    data = content(n)
    ti = tarfile.TarInfo(name); ti.size = len(data); ti.mode = 0o644; ti.uid = ti.gid = 65534
    out.addfile(ti, io.BytesIO(data))
total = mb << 20
small = total * 3 // 10          # 30 %: many small files (1-64 KiB)
i = 0
while small > 0:
    n = min(small, rnd.randint(1024, 65536)); add("small/%03d/f%06d" % (i % 200, i), n); small -= n; i += 1
large = total - total * 3 // 10  # 70 %: a few large files (≤ 128 MiB)
j = 0
while large > 0:
    n = min(large, 128 << 20); add("large/block-%02d" % j, n); large -= n; j += 1
out.close()
EOF
}

fmt_row() { printf '%-40s %10s %12s\n' "$1" "$2" "$3"; }
timed() { # $1 label, rest: command; prints wall seconds and peak RSS (MiB)
    local label=$1; shift
    /usr/bin/time -f '%e %M' -o "$WORK/time" "$@" >"$WORK/out" 2>&1 || { cat "$WORK/out" >&2; return 1; }
    read -r secs kib <"$WORK/time"
    fmt_row "$label" "${secs}s" "$((kib / 1024)) MiB"
}

desired_state() { # $1 dir, $2 volume, $3 bucket, [$4 endpoint]
    mkdir -p "$1" "$WORK/state" "$WORK/tf"
    printf 'R2_ACCESS_KEY_ID=AKIDBENCH\nR2_SECRET_ACCESS_KEY=benchsecret\n' >"$WORK/env" && chmod 600 "$WORK/env"
    cat >"$1/stack.yaml" <<EOF
apiVersion: obs.tlsstress.art/v1alpha1
kind: Stack
metadata: {name: bench}
spec: {project: $P, stateDir: $WORK/state, envFile: $WORK/env, textfileDir: $WORK/tf}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Volume
metadata: {name: $2}
spec: {name: $2}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Job
metadata: {name: backup}
spec:
  schedule: "30 3 * * *"
  backup: {bucket: $3, endpoint: "${4:-$URL}", region: us-east-1, volumes: [$2], keepDaily: 14, lockRetentionDays: 7, maxBucketGb: 100, textfile: backup.prom}
EOF
}

bucket_bytes() { python3 -c "
import boto3, sys
s3 = boto3.client('s3', endpoint_url='$URL')
t = 0
for page in s3.get_paginator('list_objects_v2').paginate(Bucket='$1'):
    t += sum(o['Size'] for o in page.get('Contents', []))
print(t)"; }

echo "== part 1: one backup of a ${MB} MiB volume (many small files, a few large) =="
docker volume create "$P-data" >/dev/null
gen "$P-data" "$MB" 1
docker run -d --name "$P-user" -v "$P-data:/data" "$IMAGE" sleep 86400 >/dev/null
MP=$(docker volume inspect -f '{{.Mountpoint}}' "$P-data")
desired_state "$WORK/ds" "$P-data" obsd
sync
fmt_row "" "wall" "peak RSS"
timed "floor: tar | zstd -3 > /dev/null" bash -c "tar -C '$MP' -cf - . | zstd -3 -q -T1 > /dev/null"
timed "floor+PUTs: … | split 8M | curl PUT" bash -c "tar -C '$MP' -cf - . | zstd -3 -q -T1 | split -b 8M -a 5 --filter='curl -sf -X PUT -H \"Content-Type: application/octet-stream\" --data-binary @- $URL/floor/\$FILE >/dev/null' - part-"
if aws --version >/dev/null 2>&1; then
    timed "floor+aws cp: … | aws s3 cp -" bash -c "tar -C '$MP' -cf - . | zstd -3 -q -T1 | aws s3 cp --quiet --endpoint-url $URL - s3://floorcp/floor.tar.zst"
    UPLOAD="aws s3 cp --quiet --endpoint-url $URL $WORK/legacy.tar.zst s3://legacy/legacy.tar.zst"
else
    UPLOAD="python3 -c \"import boto3; boto3.client('s3', endpoint_url='$URL').upload_file('$WORK/legacy.tar.zst', 'legacy', 'legacy.tar.zst')\""
fi
# What any reader through the engine waits for: the archive endpoint obsd reads, alone.
docker create --name "$P-probe" -v "$P-data:/data:ro" "$IMAGE" /never-started >/dev/null
timed "engine archive stream alone (curl)" curl -sf --unix-socket /var/run/docker.sock -o /dev/null "http://localhost/containers/$P-probe/archive?path=/data"
docker rm "$P-probe" >/dev/null
timed "obsd: obsctl backup run" "$OBSCTL" backup run --desired-state "$WORK/ds" --as-of 2026-01-01
# The time split, from the job's textfile (the same series the daemon writes).
split_line() { # $1 textfile
    python3 - "$1" <<'EOF'
import re, sys
st, wall = {}, 0.0
for line in open(sys.argv[1]):
    m = re.match(r'backup_r2_source_stage_seconds\{.*stage="(\w+)".*\} (\S+)', line)
    if m: st[m.group(1)] = float(m.group(2))
    m = re.match(r'backup_r2_source_duration_seconds\{.*\} (\S+)', line)
    if m: wall = float(m.group(1))
print(f"  split of {wall:.2f}s: " + ", ".join(f"{k} {v:.2f}s" for k, v in st.items()))
EOF
}
split_line "$WORK/tf/backup.prom"
rm -rf "$WORK/ds-sink" "$WORK/state"
desired_state "$WORK/ds-sink" "$P-data" sink "$SINK"
timed "obsd → sink (stores nothing)" "$OBSCTL" backup run --desired-state "$WORK/ds-sink" --as-of 2026-01-01
split_line "$WORK/tf/backup.prom"
rm -rf "$WORK/state"
desired_state "$WORK/ds" "$P-data" obsd
if [ "${LEGACY:-1}" = 1 ]; then
    timed "legacy: docker run tar|zstd + upload" bash -c "docker run --rm -v '$P-data:/data:ro' '$IMAGE' tar -C /data -cf - . | zstd -3 -q -T1 > '$WORK/legacy.tar.zst' && $UPLOAD"
fi
timed "obsd: obsctl restore volume" "$OBSCTL" restore volume "$P-data" --desired-state "$WORK/ds" --into "$P-restored"
if [ "${LEGACY:-1}" = 1 ]; then
    fmt_row "bucket bytes: obsd / legacy file" "$(bucket_bytes obsd)" "$(stat -c %s "$WORK/legacy.tar.zst")"
    rm -f "$WORK/legacy.tar.zst"
fi
# moto alone: as many objects of the same sizes as obsd stored, PUT by boto3.
moto_alone() { # $1 threads
    python3 - "$URL" "$1" <<'EOF'
import boto3, os, sys, time
from concurrent.futures import ThreadPoolExecutor
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
sizes = [o["Size"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket="obsd", Prefix="objects/") for o in p.get("Contents", [])]
data = os.urandom(max(sizes))
t = time.time()
with ThreadPoolExecutor(int(sys.argv[2])) as ex:
    list(ex.map(lambda x: s3.put_object(Bucket="plain", Key="k%d-%s" % (x[0], sys.argv[2]), Body=data[: x[1]]), enumerate(sizes)))
print(f"{time.time() - t:.2f}s {len(sizes)} objects, {sum(sizes)} bytes")
EOF
}
read -r secs what <<<"$(moto_alone 1)"
fmt_row "moto alone: boto3 PUTs, 1 at a time" "$secs" "$what"
read -r secs what <<<"$(moto_alone 3)"
fmt_row "moto alone: boto3 PUTs, 3 at a time" "$secs" "$what"
docker rm -f "$P-user" >/dev/null; docker volume rm -f "$P-data" "$P-restored" >/dev/null

[ "$DAYS" -gt 0 ] || exit 0
echo
echo "== part 2: $DAYS days of a TSDB-like volume (${BASE_MB} MiB of blocks, +$BLOCKS x ${BLOCK_MB} MiB blocks and a ${WAL_MB} MiB WAL rewrite per day, lock 7 days) =="
docker volume create "$P-tsdb" >/dev/null
gen "$P-tsdb" "$BASE_MB" 2
docker run -d --name "$P-tsdb-user" -v "$P-tsdb:/data" "$IMAGE" sleep 86400 >/dev/null
MP=$(docker volume inspect -f '{{.Mountpoint}}' "$P-tsdb")
rm -rf "$WORK/ds" && desired_state "$WORK/ds" "$P-tsdb" tsdb
fulls=0
last=0
for d in $(seq 1 "$DAYS"); do
    for b in $(seq 1 "$BLOCKS"); do
        head -c $((BLOCK_MB << 20)) /dev/urandom >"$MP/block-day$d-$b"
    done
    head -c $((WAL_MB << 20)) /dev/urandom >"$MP/wal"
    "$OBSCTL" backup run --desired-state "$WORK/ds" --as-of "2026-01-$(printf %02d "$d")" >/dev/null
    last=$(tar -C "$MP" -cf - . | zstd -3 -q -T1 | wc -c)
    fulls=$((fulls + last))
done
tsdb=$(bucket_bytes tsdb)
fmt_row "bucket after $DAYS days (obsd)" "$tsdb" "$(python3 -c "print(f'{$tsdb/$last:.2f}x one full copy')")"
fmt_row "$DAYS daily full tarballs" "$fulls" "$(python3 -c "print(f'{$fulls/$last:.2f}x one full copy')")"
fmt_row "one full copy (day $DAYS, zstd -3)" "$last" "1.00x"
