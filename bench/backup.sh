#!/usr/bin/env bash
# Benchmark of obsd's backup (not a test: it prints figures side by side).
#
#   bench/backup.sh
#
# Part 1: a volume of BENCH_MB MiB of mixed files (many small, a few large; half of each
# file random, half text, like compressed-but-not-quite TSDB data) backed up into moto's
# S3 server on 127.0.0.1, three ways:
#   floor   tar -c of the volume's directory | zstd -3 > /dev/null (no upload at all)
#   obsd    obsctl backup run (the Job body: engine archive stream → chunks → zstd → PUT)
#   legacy  docker run … tar | zstd -3 > file, then an upload with the AWS CLI
# plus obsd's restore of it into a new volume. Wall time and peak RSS (GNU time).
#
# Part 2: DAYS days of a TSDB-like volume (BASE_MB of blocks, each day BLOCKS new
# immutable BLOCK_MB blocks and a rewritten WAL_MB WAL), backed up daily with the shipped
# 7-day lock (`--as-of` simulates the days): the bucket's bytes after the last day next
# to the sum of DAYS daily full tarballs and to one full copy.
#
# Needs docker, zstd, GNU time (/usr/bin/time), python3 with moto[server] and boto3
# (tests/setup.sh), the AWS CLI (else boto3's upload_file, the same transfer code), and
# a built obsctl: OBSD_BIN_DIR (default target/release; `cargo build --release`).
# Settings: BENCH_MB (1024), DAYS (14), BASE_MB (256), BLOCKS (2), BLOCK_MB (24),
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

[ -x "$OBSCTL" ] || { echo "no obsctl at $OBSCTL (cargo build --release, or set OBSD_BIN_DIR)" >&2; exit 1; }

cleanup() {
    docker rm -f "$P-user" "$P-tsdb-user" >/dev/null 2>&1 || true
    docker rm -f "obsd-backup-$P-data" "obsd-backup-$P-tsdb" >/dev/null 2>&1 || true
    docker volume rm -f "$P-data" "$P-tsdb" "$P-restored" >/dev/null 2>&1 || true
    [ -n "$MOTO_PID" ] && kill "$MOTO_PID" 2>/dev/null || true
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
for b in obsd legacy tsdb; do curl -sf -X PUT "$URL/$b" >/dev/null; done
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

fmt_row() { printf '%-34s %10s %12s\n' "$1" "$2" "$3"; }
timed() { # $1 label, rest: command; prints wall seconds and peak RSS (MiB)
    local label=$1; shift
    /usr/bin/time -f '%e %M' -o "$WORK/time" "$@" >"$WORK/out" 2>&1 || { cat "$WORK/out" >&2; return 1; }
    read -r secs kib <"$WORK/time"
    fmt_row "$label" "${secs}s" "$((kib / 1024)) MiB"
}

desired_state() { # $1 dir, $2 volume, $3 bucket
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
  backup: {bucket: $3, endpoint: "$URL", region: us-east-1, volumes: [$2], keepDaily: 14, lockRetentionDays: 7, maxBucketGb: 100, textfile: backup.prom}
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
timed "obsd: obsctl backup run" "$OBSCTL" backup run --desired-state "$WORK/ds" --as-of 2026-01-01
if aws --version >/dev/null 2>&1; then
    UPLOAD="aws s3 cp --quiet --endpoint-url $URL $WORK/legacy.tar.zst s3://legacy/legacy.tar.zst"
else
    UPLOAD="python3 -c \"import boto3; boto3.client('s3', endpoint_url='$URL').upload_file('$WORK/legacy.tar.zst', 'legacy', 'legacy.tar.zst')\""
fi
timed "legacy: docker run tar|zstd + upload" bash -c "docker run --rm -v '$P-data:/data:ro' '$IMAGE' tar -C /data -cf - . | zstd -3 -q -T1 > '$WORK/legacy.tar.zst' && $UPLOAD"
timed "obsd: obsctl restore volume" "$OBSCTL" restore volume "$P-data" --desired-state "$WORK/ds" --into "$P-restored"
fmt_row "bucket bytes: obsd / legacy file" "$(bucket_bytes obsd)" "$(stat -c %s "$WORK/legacy.tar.zst")"
rm -f "$WORK/legacy.tar.zst"
docker rm -f "$P-user" >/dev/null; docker volume rm -f "$P-data" "$P-restored" >/dev/null

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
