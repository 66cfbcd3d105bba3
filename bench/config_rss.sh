#!/usr/bin/env bash
# Peak memory of loading a desired state with one large config file, side by side:
# the obsctl under test (streaming hash, 64 MiB cap) and another build (e.g. one from
# before issue 11, which read each config file whole to hash it).
#
#   bash bench/config_rss.sh [NEW_OBSCTL] [OLD_OBSCTL]
#
# Defaults: target/debug/obsctl, and no comparison when OLD_OBSCTL is not given.
# Sizes: 1 MiB, 60 MiB (under the cap), 300 MiB (over it: refused by the new build).
# Files are sparse, so the disk holds nothing; reading them still costs the bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
new=${1:-target/debug/obsctl}
old=${2:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/ds/config"
cat > "$tmp/ds/stack.yaml" <<'YAML'
apiVersion: obs.tlsstress.art/v1alpha1
kind: Stack
metadata: {name: bench}
spec: {project: bench, defaultNetwork: default}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Network
metadata: {name: default}
spec: {}
---
apiVersion: obs.tlsstress.art/v1alpha1
kind: Service
metadata: {name: app}
spec:
  image: example/app:1
  configFiles: [{source: config/big.bin, target: /etc/big.bin}]
YAML
measure() { # binary -> "peak_kib seconds exit"
  local code=0
  /usr/bin/time -f '%M %e' -o "$tmp/time" "$1" validate "$tmp/ds" >/dev/null 2>&1 || code=$?
  echo "$(tail -1 "$tmp/time") $code"
}
printf '%-10s | %-28s | %-28s\n' "config" "new: peak RSS, time, exit" "old: peak RSS, time, exit"
printf '%-10s-+-%-28s-+-%-28s\n' "----------" "----------------------------" "----------------------------"
for mib in 1 60 300; do
  rm -f "$tmp/ds/config/big.bin"
  truncate -s "${mib}M" "$tmp/ds/config/big.bin"
  read -r n_kib n_s n_code < <(measure "$new")
  row_new=$(printf '%6d MiB %6.2fs exit %s' $((n_kib / 1024)) "$n_s" "$n_code")
  row_old="-"
  if [ -n "$old" ]; then
    read -r o_kib o_s o_code < <(measure "$old")
    row_old=$(printf '%6d MiB %6.2fs exit %s' $((o_kib / 1024)) "$o_s" "$o_code")
  fi
  printf '%-10s | %-28s | %-28s\n' "${mib} MiB" "$row_new" "$row_old"
done
