#!/usr/bin/env bash
# Rollout benchmark (issue 10): Caddy in front of a backend, a load loop through Caddy.
#
#   bench/rollout.sh            default: REPS=5 config changes per tool
#
# 1. A valid Caddyfile change under load: obsd applies it with `onChange: {exec: caddy
#    reload}` (after `caddy validate` as preflight); docker-compose v1 does not see
#    bind-mount content changes, so the usual way is `docker-compose restart caddy`.
#    Failed requests per change, side by side.
# 2. A Caddy image/command change whose new container exits at once: obsd's health gate
#    rolls back to the kept old container. Time from the failing new container's death
#    (Docker `die` event) to the old one answering again, and the whole outage seen by
#    the load loop (stop of the old container → first answer again).
#
# Images are built like the tests build them: FROM scratch + Debian's caddy (and the
# libraries ldd names) + static busybox. Settings: OBSD_BIN_DIR (default
# $CARGO_TARGET_DIR/debug or target/debug), REPS (5).
set -uo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
BIN=${OBSD_BIN_DIR:-${CARGO_TARGET_DIR:-$REPO/target}/debug}
OBSD=$BIN/obsd
OBSCTL=$BIN/obsctl
LOADPY="python3 $HERE/rollout_load.py"
REPS=${REPS:-5}
CADDY_IMAGE=obsd-bench/caddy:1
BB_IMAGE=obsd-bench/busybox:1
P_OBSD=obsdrollbench
P_COMPOSE=composerollbench

for b in "$OBSD" "$OBSCTL"; do
    [ -x "$b" ] || { echo "bench: $b not found (cargo build --bins; OBSD_BIN_DIR=...)" >&2; exit 1; }
done
for c in docker-compose /usr/bin/caddy /bin/busybox python3; do
    command -v "$c" >/dev/null || { echo "bench: $c not found" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/obsd-rollbench.XXXXXX)
DAEMON_PID=""
say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cleanup() {
    [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
    for p in "$P_OBSD" "$P_COMPOSE"; do
        ids=$(docker ps -aq --filter "label=obs.tlsstress.art/stack=$p" --filter "label=com.docker.compose.project=$p")
        ids="$ids $(docker ps -aq --filter "label=obs.tlsstress.art/stack=$p") $(docker ps -aq --filter "label=com.docker.compose.project=$p")"
        # shellcheck disable=SC2086
        [ -n "${ids// /}" ] && docker rm -f $ids >/dev/null 2>&1
        for n in $(docker network ls -q --filter "name=^${p}_"); do docker network rm "$n" >/dev/null 2>&1; done
    done
}
trap cleanup EXIT INT TERM

build_image() { # TAG BINARY...
    local tag=$1; shift
    local ctx=$WORK/img-${tag//[:\/]/_}
    mkdir -p "$ctx/root/bin" "$ctx/root/tmp"
    cp /bin/busybox "$ctx/root/bin/busybox"
    for b in "$@"; do
        mkdir -p "$ctx/root$(dirname "$b")"; cp "$b" "$ctx/root$b"
        for lib in $(ldd "$b" | grep -o '/[^ ]*'); do
            mkdir -p "$ctx/root$(dirname "$lib")"; cp "$lib" "$ctx/root$lib"
        done
    done
    printf 'FROM scratch\nCOPY root/ /\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\nENV XDG_DATA_HOME=/tmp/data XDG_CONFIG_HOME=/tmp/config HOME=/tmp\nCMD ["/bin/sh"]\n' >"$ctx/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" >/dev/null
}

caddyfile() { # GEN
    printf '{\n\tauto_https off\n}\n\n:8080 {\n\trespond /gen "%s"\n\treverse_proxy backend:8080\n}\n' "$1"
}

ip_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$1" 2>/dev/null | awk '{print $1}'; }

wait_for() { # SECONDS CMD... — poll until CMD succeeds
    local deadline=$(( $(date +%s) + $1 )); shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -ge "$deadline" ] && return 1
        sleep 0.1
    done
}

gen_is() { # ADDR GEN
    [ "$(python3 -c "import sys,urllib.request;print(urllib.request.urlopen('http://$1/gen',timeout=2).read().decode())" 2>/dev/null)" = "$2" ]
}

# Runs a load loop through ADDR while CMD runs and until /gen answers GEN; prints "ok failed".
under_load() { # ADDR GEN OUT CMD...
    local addr=$1 gen=$2 out=$3; shift 3
    rm -f "$out.stop"
    $LOADPY load "$addr" / "$out.stop" "$out" &
    local lp=$!
    sleep 0.5
    "$@"
    wait_for 60 gen_is "$addr" "$gen"
    sleep 0.5
    touch "$out.stop"; wait "$lp"
    $LOADPY summary "$out"
}

say "building images"
build_image "$CADDY_IMAGE" /usr/bin/caddy
build_image "$BB_IMAGE"
BACKEND_CMD='mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www'

# ------------------------------------------------------------------ obsd
DS=$WORK/ds; mkdir -p "$DS/config/caddy" "$WORK/state"
caddyfile 0 >"$DS/config/caddy/Caddyfile"
write_ds() { # CADDY_COMMAND_JSON
    cat >"$DS/stack.yaml" <<YAML
apiVersion: obs.tlsstress.art/v1alpha1
kind: Stack
metadata: {name: bench}
spec: {project: $P_OBSD, defaultNetwork: default, stateDir: $WORK/state}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Network
metadata: {name: default}
spec: {}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Service
metadata: {name: backend}
spec:
  image: $BB_IMAGE
  command: [sh, -c, "$BACKEND_CMD"]
  stopGracePeriod: 1s
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Service
metadata: {name: caddy}
spec:
  image: $CADDY_IMAGE
  command: $1
  stopGracePeriod: 2s
  dependsOn: [{service: backend}]
  configFiles:
  - source: config/caddy
    target: /etc/caddy
    onChange: {exec: [/usr/bin/caddy, reload, --config, /etc/caddy/Caddyfile, --adapter, caddyfile]}
  configCheck:
    command: [/usr/bin/caddy, validate, --config, /etc/caddy/Caddyfile, --adapter, caddyfile]
YAML
}
GOOD_CMD='[/usr/bin/caddy, run, --config, /etc/caddy/Caddyfile, --adapter, caddyfile]'
BAD_CMD='[/usr/bin/caddy, run, --config, /etc/caddy/missing.json]'
write_ds "$GOOD_CMD"
say "obsd: starting the daemon"
OBSD_LOG=info "$OBSD" --desired-state "$DS" --state-dir "$WORK/state" --listen 127.0.0.1:0 >"$WORK/obsd.log" 2>&1 &
DAEMON_PID=$!
wait_for 120 bash -c "ip=\$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' $P_OBSD-caddy 2>/dev/null) && [ -n \"\$ip\" ] && python3 -c \"import urllib.request;urllib.request.urlopen('http://'+'\$ip'+':8080/gen',timeout=2)\"" \
    || { echo "bench: obsd's caddy never answered; $WORK/obsd.log" >&2; exit 1; }
A_OBSD="$(ip_of $P_OBSD-caddy):8080"

declare -a OBSD_FAILED OBSD_OK COMPOSE_FAILED COMPOSE_OK
for i in $(seq 1 "$REPS"); do
    read -r ok failed < <(under_load "$A_OBSD" "$i" "$WORK/obsd-$i.json" \
        bash -c "caddyfile() { printf '{\n\tauto_https off\n}\n\n:8080 {\n\trespond /gen \"%s\"\n\treverse_proxy backend:8080\n}\n' \"\$1\"; }; caddyfile $i > $DS/config/caddy/Caddyfile")
    OBSD_OK+=("$ok"); OBSD_FAILED+=("$failed")
    say "obsd exec reload #$i: $ok ok, $failed failed"
done
START_OBSD=$(docker inspect -f '{{.State.StartedAt}}' $P_OBSD-caddy)

# A replacement that exits at once: the health gate rolls back.
OLD_ID=$(docker inspect -f '{{.Id}}' $P_OBSD-caddy)
T0=$(date +%s%N)
rm -f "$WORK/rb.json.stop"
$LOADPY load "$A_OBSD" / "$WORK/rb.json.stop" "$WORK/rb.json" &
LP=$!
sleep 0.5
write_ds "$BAD_CMD"
wait_for 60 bash -c "OBSD_STATE_DIR=$WORK/state OBSD_SOCKET=$WORK/state/obsd.sock $OBSCTL status -o json 2>/dev/null | grep -q rolled_back" \
    || { touch "$WORK/rb.json.stop"; wait "$LP"; echo "bench: no rollback seen; $WORK/obsd.log" >&2; exit 1; }
wait_for 30 gen_is "$A_OBSD" "$REPS"
sleep 0.5
touch "$WORK/rb.json.stop"; wait "$LP"
T1=$(date +%s%N)
DIE_NS=$(docker events --since "$((T0 / 1000000000))" --until "$((T1 / 1000000000 + 1))" \
    --filter event=die --format '{{.ID}} {{.TimeNano}} {{index .Actor.Attributes "name"}}' \
    | awk -v old="$OLD_ID" -v name="$P_OBSD-caddy" '$1 != old && $3 == name {print $2; exit}')
BACK=$($LOADPY back_after "$WORK/rb.json" "$DIE_NS")
OUTAGE=$($LOADPY outage "$WORK/rb.json")
read -r RB_OK RB_FAILED < <($LOADPY summary "$WORK/rb.json")
NOW_ID=$(docker inspect -f '{{.Id}}' $P_OBSD-caddy)
say "obsd rollback: new container died -> old serving in ${BACK}s; outage ${OUTAGE}s; $RB_FAILED failed requests; same container: $([ "$NOW_ID" = "$OLD_ID" ] && echo yes || echo no)"
kill "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null; DAEMON_PID=""
cleanup

# ------------------------------------------------------------------ docker-compose
CD=$WORK/compose; mkdir -p "$CD"
caddyfile 0 >"$CD/Caddyfile"
cat >"$CD/docker-compose.yml" <<YAML
version: "2.4"
services:
  backend:
    image: $BB_IMAGE
    command: [sh, -c, "$BACKEND_CMD"]
    stop_grace_period: 1s
  caddy:
    image: $CADDY_IMAGE
    command: [/usr/bin/caddy, run, --config, /etc/caddy/Caddyfile, --adapter, caddyfile]
    stop_grace_period: 2s
    depends_on: [backend]
    volumes: ["./Caddyfile:/etc/caddy/Caddyfile:ro"]
YAML
say "docker-compose: up"
(cd "$CD" && docker-compose -p $P_COMPOSE up -d >/dev/null 2>&1)
CCADDY=$(docker ps -q --filter "label=com.docker.compose.project=$P_COMPOSE" --filter "label=com.docker.compose.service=caddy")
A_COMPOSE="$(ip_of "$CCADDY"):8080"
wait_for 60 gen_is "$A_COMPOSE" 0 || { echo "bench: compose caddy never answered" >&2; exit 1; }
for i in $(seq 1 "$REPS"); do
    # In place (same inode), so the restarted container sees it through the file mount.
    read -r ok failed < <(under_load "$A_COMPOSE" "$i" "$WORK/compose-$i.json" \
        bash -c "printf '{\n\tauto_https off\n}\n\n:8080 {\n\trespond /gen \"%s\"\n\treverse_proxy backend:8080\n}\n' $i > $CD/Caddyfile && cd $CD && docker-compose -p $P_COMPOSE restart caddy >/dev/null 2>&1")
    COMPOSE_OK+=("$ok"); COMPOSE_FAILED+=("$failed")
    say "docker-compose restart #$i: $ok ok, $failed failed"
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
sum() { printf '%s\n' "$@" | awk '{s+=$1} END {print s}'; }

cat <<TABLE

## Rollout benchmark ($(date -u +%Y-%m-%dT%H:%MZ), REPS=$REPS, $(nproc) cores)

| valid Caddyfile change under load | obsd (\`onChange: {exec: caddy reload}\`, preflight \`caddy validate\`) | docker-compose v1 (\`restart caddy\`) |
|---|---|---|
| failed requests per change (median) | $(median "${OBSD_FAILED[@]}") | $(median "${COMPOSE_FAILED[@]}") |
| failed requests, all $REPS changes | $(sum "${OBSD_FAILED[@]}") of $(( $(sum "${OBSD_FAILED[@]}") + $(sum "${OBSD_OK[@]}") )) | $(sum "${COMPOSE_FAILED[@]}") of $(( $(sum "${COMPOSE_FAILED[@]}") + $(sum "${COMPOSE_OK[@]}") )) |
| per change (failed) | ${OBSD_FAILED[*]} | ${COMPOSE_FAILED[*]} |

| failing new Caddy container (exits at start) | obsd (health gate, rollback) | docker-compose v1 |
|---|---|---|
| new container's death → old one serving again | ${BACK} s | n/a (no old container is kept: \`up -d\` leaves the service down) |
| outage seen by the load loop (old stopped → serving again) | ${OUTAGE} s | — |
| failed requests during the rollout | $RB_FAILED of $((RB_OK + RB_FAILED)) | — |
| the old container serves again (same ID) | $([ "$NOW_ID" = "$OLD_ID" ] && echo yes || echo no) | — |
TABLE
say "logs and samples in $WORK"
