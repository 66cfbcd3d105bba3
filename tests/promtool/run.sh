#!/usr/bin/env bash
# Checks the Prometheus rule files shipped in desired-state/config/prometheus/
# and runs the promtool unit tests for the obsd alerts and the obsd jobs' alerts.
#
# Needs `promtool` on PATH (Debian/Ubuntu: the `prometheus` package); this
# script installs nothing. Exits non-zero on the first failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

rules_dir=../../desired-state/config/prometheus

if ! command -v promtool >/dev/null 2>&1; then
    echo "run.sh: promtool not found on PATH (install the prometheus package)" >&2
    exit 1
fi

promtool --version 2>&1 | head -n 1

# obsd-alerts.yml is required; the stack's other rule files are checked when
# they exist.
rule_files=("$rules_dir/obsd-alerts.yml")
for optional in alerts.yml slo-rules.yml; do
    if [[ -f "$rules_dir/$optional" ]]; then
        rule_files+=("$rules_dir/$optional")
    fi
done

promtool check rules "${rule_files[@]}"
promtool test rules obsd-alerts.test.yml
# The aws_jobs group of alerts.yml (obsd's logs-shipper and aws-cron-monitor Jobs).
promtool test rules aws-jobs.test.yml
# The restore-drill alerts of the backup_dr group (obsd's backup Job).
promtool test rules backup.test.yml
