#!/usr/bin/env bash
# Benchmark obsd against docker-compose v1 on the same generated stack.
#
#   bench/run.sh [N ...]          default: 20 50 100
#
# For each N: N long-running services (one volume + env each) on one network, as an
# obsd desired state (project obsdbench<N>), a docker-compose file (composebench<N>)
# and raw Docker API calls (floorbench<N>). Each tool is measured with only its own
# stack on the engine. Every external command runs under `timeout`; a command that hits
# its timeout is reported as "stalled (timeout Ns)". Everything the run creates is
# removed at the end, on error and on Ctrl-C.
#
# Settings (environment): OBSD_BIN_DIR (default $CARGO_TARGET_DIR/release or
# target/release), NOOP_REPS (7), COMPOSE_NOOP_REPS (3), REPAIR_REPS (5), IDLE_SECS (30),
# COLD_REPS (1), T_COMPOSE (300, seconds per docker-compose command), T_OBSD (300),
# T_DOCKER (60), T_REPAIR (30), RESULTS (bench/results-<date>.md).
set -uo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
BIN=${OBSD_BIN_DIR:-${CARGO_TARGET_DIR:-$REPO/target}/release}
OBSCTL=$BIN/obsctl
OBSD=$BIN/obsd
HELPER="python3 $HERE/helper.py"
IMAGE=${BENCH_IMAGE:-obsd-bench/busybox:1}
NOOP_REPS=${NOOP_REPS:-7}
COMPOSE_NOOP_REPS=${COMPOSE_NOOP_REPS:-3}
REPAIR_REPS=${REPAIR_REPS:-5}
IDLE_SECS=${IDLE_SECS:-30}
COLD_REPS=${COLD_REPS:-1}
T_COMPOSE=${T_COMPOSE:-300}
T_OBSD=${T_OBSD:-300}
T_DOCKER=${T_DOCKER:-60}
T_REPAIR=${T_REPAIR:-30}
DATE=$(date -u +%Y-%m-%d)
RESULTS=${RESULTS:-$HERE/results-$DATE.md}

NS=("$@")
[ ${#NS[@]} -eq 0 ] && NS=(20 50 100)
for n in "${NS[@]}"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "bench: N must be a positive integer: $n" >&2; exit 64; }
done
for b in "$OBSCTL" "$OBSD"; do
    [ -x "$b" ] || { echo "bench: $b not found; cargo build --release --bins (OBSD_BIN_DIR=...)" >&2; exit 1; }
done
command -v docker-compose >/dev/null || { echo "bench: docker-compose not found" >&2; exit 1; }

WORK=$(mktemp -d /tmp/obsd-bench.XXXXXX)
LOG=$WORK/bench.log
TSV=$WORK/results.tsv
SAMPLES=$WORK/samples.txt
: >"$TSV"
: >"$SAMPLES"
DAEMON_TPID=""
DAEMON_PID=""
CHILD=""

say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$LOG" >&2; }
sample() { printf '%s\n' "$*" >>"$SAMPLES"; say "  $*"; }
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$TSV"; }

# run_timed TIMEOUT cmd... → sets T (wall seconds, 3 decimals) and RC; output to $LOG.
run_timed() {
    local to=$1
    shift
    echo "+ $*" >>"$LOG"
    local t0=$EPOCHREALTIME
    # In the background + wait, so Ctrl-C reaches the trap at once (timeout(1) runs in
    # its own process group and would not see the terminal's SIGINT).
    timeout -k 5 "$to" "$@" >>"$LOG" 2>&1 &
    CHILD=$!
    wait "$CHILD"
    RC=$?
    local t1=$EPOCHREALTIME
    CHILD=""
    T=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
}

# cell TIMEOUT [ALLOWED_RC...] → a table cell for the last run_timed.
cell() {
    local to=$1
    shift
    local ok
    for ok in 0 "$@"; do
        [ "$RC" -eq "$ok" ] && { echo "$T"; return; }
    done
    case $RC in
        124 | 137) echo "stalled (timeout ${to}s)" ;;
        *) echo "failed (exit $RC)" ;;
    esac
}

is_num() { [[ $1 =~ ^[0-9]+(\.[0-9]+)?$ ]]; }

clean_project() {
    local p=$1
    timeout "$T_DOCKER" docker ps -aq --filter "name=^/${p}[-_]" 2>>"$LOG" |
        xargs -r -n 10 -P 4 timeout "$T_DOCKER" docker rm -f >>"$LOG" 2>&1
    timeout "$T_DOCKER" docker volume ls -q --filter "name=${p}_" 2>>"$LOG" | grep -E "^${p}_" |
        xargs -r -n 20 -P 4 timeout "$T_DOCKER" docker volume rm -f >>"$LOG" 2>&1
    local net left try
    for try in 1 2 3; do
        left=""
        for net in $(timeout "$T_DOCKER" docker network ls --format '{{.Name}}' --filter "name=${p}_" 2>>"$LOG" |
            grep -E "^${p}_"); do
            timeout "$T_DOCKER" docker network rm "$net" >>"$LOG" 2>&1 || left="$left $net"
        done
        [ -z "$left" ] && break
        sleep 1
    done
    # The engine sometimes keeps a stale endpoint count after parallel removals; such a
    # network can only be removed after a dockerd restart. Report it, do not fail.
    [ -n "$left" ] && sample "WARNING: could not remove network(s)$left (stale endpoint count in dockerd?)"
    return 0
}

stop_daemon() {
    [ -n "$DAEMON_PID" ] && kill -TERM "$DAEMON_PID" 2>/dev/null
    if [ -n "$DAEMON_TPID" ]; then
        local i
        for i in $(seq 1 70); do
            kill -0 "$DAEMON_TPID" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$DAEMON_TPID" 2>/dev/null
        wait "$DAEMON_TPID" 2>/dev/null
    fi
    DAEMON_TPID=""
    DAEMON_PID=""
}

CLEANED=0
cleanup() {
    [ "$CLEANED" -eq 1 ] && return
    CLEANED=1
    [ -n "$CHILD" ] && kill -TERM "$CHILD" 2>/dev/null && wait "$CHILD" 2>/dev/null
    stop_daemon
    say "cleaning up benchmark containers, volumes and networks"
    local n
    for n in "${NS[@]}"; do
        clean_project "obsdbench$n"
        clean_project "composebench$n"
        clean_project "floorbench$n"
    done
    say "logs and raw samples kept in $WORK"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM


# ------------------------------------------------------------------ machine
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
DOCKER_VERSION=$(timeout 30 docker version --format '{{.Server.Version}}' 2>/dev/null || echo unknown)
COMPOSE_VERSION=$(timeout 30 docker-compose version --short 2>/dev/null || echo unknown)
say "work dir $WORK; N = ${NS[*]}; nproc $(nproc); load $LOAD_BEFORE; docker $DOCKER_VERSION; docker-compose $COMPOSE_VERSION"

# ------------------------------------------------------------------ image
CTX=$WORK/image
mkdir -p "$CTX"
cp /bin/busybox "$CTX/busybox"
cat >"$CTX/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
EOF
if ! timeout 300 docker build -q -t "$IMAGE" "$CTX" >>"$LOG" 2>&1; then
    say "building the test image failed (see $LOG)"
    exit 1
fi

for n in "${NS[@]}"; do
    OP=obsdbench$n
    CP=composebench$n
    FP=floorbench$n
    D=$WORK/$OP
    DC=$WORK/$CP
    S=$WORK/state-$n
    width=$(( ${#n} > 3 ? ${#n} : 3 ))
    name_of() { printf 's%0*d' "$width" "$1"; }
    sample "=== N=$n (load $(cut -d' ' -f1-3 /proc/loadavg))"
    clean_project "$OP"
    clean_project "$CP"
    clean_project "$FP"
    $HELPER gen "$n" "$OP" "$D" "$DC" "$S" "$IMAGE" || exit 1
    timeout 60 "$OBSCTL" validate "$D" >>"$LOG" 2>&1 || { say "generated desired state is invalid (see $LOG)"; exit 1; }

    # ---------------------------------------------------------- floor
    run_timed "$T_DOCKER" $HELPER floor "$FP" "$n" "$IMAGE" 8
    FLOOR=$(cell "$T_DOCKER")
    sample "N=$n floor (network + $n volumes + $n create+start, 8 parallel): $FLOOR s"
    grep "^floor $FP" "$LOG" | tail -1 >>"$SAMPLES"
    clean_project "$FP"

    # ---------------------------------------------------------- docker-compose
    cold=()
    C_COLD=""
    for r in $(seq 1 "$COLD_REPS"); do
        clean_project "$CP"
        run_timed "$T_COMPOSE" docker-compose -p "$CP" -f "$DC/docker-compose.yml" up -d
        c=$(cell "$T_COMPOSE")
        sample "N=$n compose cold up -d #$r: $c"
        if is_num "$c"; then cold+=("$c"); else C_COLD=$c; break; fi
    done
    [ -z "$C_COLD" ] && C_COLD=$($HELPER median "${cold[@]}")
    compose_ok=1
    if ! is_num "$C_COLD"; then
        # Try once more to reach the converged state, so no-op and change can be measured.
        run_timed "$T_COMPOSE" docker-compose -p "$CP" -f "$DC/docker-compose.yml" up -d
        sample "N=$n compose: second up -d after '$C_COLD': $(cell "$T_COMPOSE")"
        [ "$RC" -eq 0 ] || compose_ok=0
    fi
    C_NOOP="skipped (not converged)"
    C_CHANGE="skipped (not converged)"
    if [ "$compose_ok" -eq 1 ]; then
        xs=()
        C_NOOP=""
        for r in $(seq 1 "$COMPOSE_NOOP_REPS"); do
            run_timed "$T_COMPOSE" docker-compose -p "$CP" -f "$DC/docker-compose.yml" up -d
            c=$(cell "$T_COMPOSE")
            sample "N=$n compose no-op up -d #$r: $c"
            if is_num "$c"; then xs+=("$c"); else C_NOOP=$c; break; fi
        done
        [ -z "$C_NOOP" ] && C_NOOP=$($HELPER median "${xs[@]}")
        before=$(timeout "$T_DOCKER" docker ps -aq --no-trunc --filter "name=^/${CP}_" | sort)
        $HELPER gen "$n" "$OP" "$WORK/unused" "$DC" "$S" "$IMAGE" --changed
        run_timed "$T_COMPOSE" docker-compose -p "$CP" -f "$DC/docker-compose.yml" up -d
        C_CHANGE=$(cell "$T_COMPOSE")
        after=$(timeout "$T_DOCKER" docker ps -aq --no-trunc --filter "name=^/${CP}_" | sort)
        sample "N=$n compose one-service change: $C_CHANGE (containers replaced: $(comm -23 <(echo "$before") <(echo "$after") | grep -c .))"
    fi
    clean_project "$CP"

    # ---------------------------------------------------------- obsd
    cold=()
    O_COLD=""
    for r in $(seq 1 "$COLD_REPS"); do
        clean_project "$OP"
        rm -rf "$S"
        run_timed "$T_OBSD" "$OBSCTL" apply --desired-state "$D"
        c=$(cell "$T_OBSD")
        sample "N=$n obsctl apply cold #$r: $c"
        if is_num "$c"; then cold+=("$c"); else O_COLD=$c; break; fi
    done
    [ -z "$O_COLD" ] && O_COLD=$($HELPER median "${cold[@]}")
    if ! is_num "$O_COLD"; then
        run_timed "$T_OBSD" "$OBSCTL" apply --desired-state "$D"
        sample "N=$n obsd: second apply after '$O_COLD': $(cell "$T_OBSD")"
    fi

    xs=()
    O_DIFF=""
    for r in $(seq 1 "$NOOP_REPS"); do
        run_timed 60 "$OBSCTL" diff --desired-state "$D"
        c=$(cell 60)
        sample "N=$n obsctl diff no-op #$r: $c"
        if is_num "$c"; then xs+=("$c"); else O_DIFF="$c"; [ "$RC" -eq 2 ] && O_DIFF="not a no-op (exit 2)"; break; fi
    done
    [ -z "$O_DIFF" ] && O_DIFF=$($HELPER median "${xs[@]}")

    xs=()
    O_NOOP_APPLY=""
    for r in $(seq 1 "$COMPOSE_NOOP_REPS"); do
        run_timed "$T_OBSD" "$OBSCTL" apply --desired-state "$D"
        c=$(cell "$T_OBSD")
        sample "N=$n obsctl apply no-op #$r: $c"
        if is_num "$c"; then xs+=("$c"); else O_NOOP_APPLY=$c; break; fi
    done
    [ -z "$O_NOOP_APPLY" ] && O_NOOP_APPLY=$($HELPER median "${xs[@]}")

    before=$(timeout "$T_DOCKER" docker ps -aq --no-trunc --filter "name=^/${OP}-" | sort)
    $HELPER gen "$n" "$OP" "$D" "$WORK/unused" "$S" "$IMAGE" --changed
    run_timed "$T_OBSD" "$OBSCTL" apply --desired-state "$D"
    O_CHANGE=$(cell "$T_OBSD")
    after=$(timeout "$T_DOCKER" docker ps -aq --no-trunc --filter "name=^/${OP}-" | sort)
    sample "N=$n obsctl apply one-service change: $O_CHANGE (containers replaced: $(comm -23 <(echo "$before") <(echo "$after") | grep -c .))"

    # ---------------------------------------------------------- obsd daemon
    O_REPAIR="not measured"
    IDLE_RSS="not measured"
    IDLE_CPU="not measured"
    IDLE_WRITES="not measured"
    PORT=$($HELPER freeport)
    URL=http://127.0.0.1:$PORT/metrics
    timeout -k 5 3600 "$OBSD" --desired-state "$D" --state-dir "$S" --listen "127.0.0.1:$PORT" \
        >"$WORK/obsd-$n.log" 2>&1 &
    DAEMON_TPID=$!
    sleep 0.3
    DAEMON_PID=$(pgrep -P "$DAEMON_TPID" | head -1)
    if [ -z "$DAEMON_PID" ] || ! timeout 120 $HELPER wait-daemon "$URL" 100; then
        say "obsd did not come up converged (see $WORK/obsd-$n.log)"
        O_REPAIR="failed (daemon not converged)"
    else
        xs=()
        O_REPAIR=""
        for r in $(seq 1 "$REPAIR_REPS"); do
            sleep 2
            victim=$OP-$(name_of $(( (r % n) + 1 )))
            c=$(timeout $(( T_REPAIR + 10 )) $HELPER repair "$victim" "$T_REPAIR" 0.02)
            rc=$?
            sample "N=$n repair of $victim #$r: $c"
            if [ "$rc" -eq 0 ] && is_num "$c"; then
                xs+=("$c")
            else
                [ "$c" = timeout ] && c="not repaired within ${T_REPAIR}s"
                O_REPAIR="failed ($c)"
                break
            fi
        done
        if [ -z "$O_REPAIR" ]; then
            O_REPAIR=$($HELPER median "${xs[@]}")
            sample "N=$n repair samples (s): ${xs[*]}"
        fi

        # Idle: converged stack, daemon running, nothing changing.
        for i in $(seq 1 60); do
            timeout 60 $HELPER running "$OP" "$n" && break
            sleep 0.5
        done
        sleep 3
        sample "N=$n idle window ${IDLE_SECS}s (load $(cut -d' ' -f1-3 /proc/loadavg))"
        j=$(timeout $(( ${IDLE_SECS%.*} + 30 )) $HELPER idle "$DAEMON_PID" "$URL" "$IDLE_SECS" "$OP")
        if [ -n "$j" ]; then
            sample "N=$n idle: $j"
            IDLE_RSS=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rss_mib_max"])' "$j")
            IDLE_CPU=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.2f (%d clock ticks)" % (d["cpu_pct"], d["cpu_ticks"]))' "$j")
            IDLE_WRITES=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%d (%d passes, %d hint events, %d of them own)" % (d["write_actions"], d["reconcile_passes"], d["hint_events"], d["hint_events_own_project"]))' "$j")
            w=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["write_actions"])' "$j")
            [ "$w" -eq 0 ] || say "WARNING: obsd made $w Docker write calls while idle"
        else
            IDLE_RSS="failed"
        fi
    fi
    stop_daemon
    clean_project "$OP"

    NA="n/a — not repaired"
    ND="n/a (no daemon)"
    record "cold converge (s)" "$n" "$O_COLD" "$C_COLD" "$FLOOR"
    record "no-op: obsctl diff vs up -d (s)" "$n" "$O_DIFF" "$C_NOOP" "—"
    record "no-op: obsctl apply vs up -d (s)" "$n" "$O_NOOP_APPLY" "$C_NOOP" "—"
    record "one-service env change (s)" "$n" "$O_CHANGE" "$C_CHANGE" "—"
    record "docker rm -f → running again (s, median of $REPAIR_REPS)" "$n" "$O_REPAIR" "$NA" "—"
    record "daemon idle RSS (MiB, max over ${IDLE_SECS}s)" "$n" "$IDLE_RSS" "$ND" "—"
    record "daemon idle CPU (% of one core)" "$n" "$IDLE_CPU" "$ND" "—"
    record "Docker write calls while idle" "$n" "$IDLE_WRITES" "$ND" "—"
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
{
    echo "# obsd vs docker-compose — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')," \
        "$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)), load average (1/5/15 min)" \
        "before $LOAD_BEFORE, after $LOAD_AFTER; Docker $DOCKER_VERSION; docker-compose $COMPOSE_VERSION;" \
        "obsd $(timeout 10 "$OBSCTL" --version | cut -d' ' -f2)."
    echo
    echo "Command: \`bench/run.sh ${NS[*]}\` (NOOP_REPS=$NOOP_REPS COMPOSE_NOOP_REPS=$COMPOSE_NOOP_REPS REPAIR_REPS=$REPAIR_REPS IDLE_SECS=$IDLE_SECS COLD_REPS=$COLD_REPS)"
    echo
    $HELPER table "$TSV" "${NS[@]}"
    echo
    echo "Floor = raw Docker API over the socket, 8 in parallel: create the network, the N volumes, then create + start the N containers."
    echo "No-op and repair cells are medians; all times are whole-process wall clock."
    echo
    echo "## Raw samples"
    echo
    echo '```'
    cat "$SAMPLES"
    echo '```'
} >"$RESULTS"
echo
$HELPER table "$TSV" "${NS[@]}"
echo
say "written $RESULTS (load after: $LOAD_AFTER)"
