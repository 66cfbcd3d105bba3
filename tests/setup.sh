#!/usr/bin/env bash
# Installs (or checks) what the test suite needs beyond Docker and the Rust toolchain:
# Debian packages (static busybox for the test images, promtool and the stack's other
# programs, a local registry) and Python packages (the S3/CloudWatch server). Idempotent:
# a second run installs nothing. Called by tests/run.sh; safe to run on its own.
#
# Each need is a check and the package that satisfies it, so a missing tool is named
# even where nothing can be installed (not root, no network).
set -euo pipefail

apt_need=()
need_apt() { # need_apt CHECK PACKAGE
  if ! eval "$1" >/dev/null 2>&1; then apt_need+=("$2"); fi
}
need_apt '[ -x /bin/busybox ]' busybox-static
need_apt 'command -v promtool' prometheus
need_apt 'command -v prometheus-alertmanager' prometheus-alertmanager
need_apt 'command -v prometheus-node-exporter' prometheus-node-exporter
need_apt '[ -x /usr/bin/docker-registry ]' docker-registry
need_apt 'command -v caddy' caddy
# Headless browser for tests/status_page_browser.rs (the public status page).
need_apt 'command -v chromium' chromium

if [ ${#apt_need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "tests/setup.sh: missing Debian packages: ${apt_need[*]} (install them as root)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # The packages' own services are not wanted: tests start their own instances.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -q --no-install-recommends "${apt_need[@]}"
  rm -f /usr/sbin/policy-rc.d
fi

pip_need=()
need_pip() { # need_pip CHECK REQUIREMENT
  if ! eval "$1" >/dev/null 2>&1; then pip_need+=("$2"); fi
}
# (Python test peers are added here by the features that need them.)
# moto's server: real CloudWatch Logs (FilterLogEvents) and CloudWatch (GetMetricData)
# for tests/jobs_aws.rs, seeded with boto3.
need_pip 'python3 -c "import moto.server, flask, flask_cors, boto3"' 'moto[server]'
need_pip 'python3 -c "import boto3"' boto3
# Offline Kubernetes schema check of `obsctl export k8s` (bundles the schemas; pinned).
need_pip 'kubernetes-validate --version | grep -qx 1.37.0' kubernetes-validate==1.37.0

if [ ${#pip_need[@]} -gt 0 ]; then
  python3 -m pip install -q "${pip_need[@]}"
fi

# The advisory check (tests/run.sh) needs cargo-audit when a RustSec database is here.
if [ -n "$(bash tests/advisory-db.sh)" ] && ! command -v cargo-audit >/dev/null; then
  cargo install cargo-audit --locked
fi

if ! docker info >/dev/null 2>&1; then
  echo "tests/setup.sh: no Docker engine answers (the real-engine tests need one)" >&2
  exit 1
fi
