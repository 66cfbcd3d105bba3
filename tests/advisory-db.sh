#!/usr/bin/env bash
# Prints the path of a local RustSec advisory database, or nothing: $OBSD_ADVISORY_DB,
# else the workplace's copy beside the checkout (../shared/advisory-db).
for d in "${OBSD_ADVISORY_DB:-}" ../shared/advisory-db /work/shared/advisory-db; do
  if [ -n "$d" ] && [ -d "$d" ]; then
    (cd "$d" && pwd)
    exit 0
  fi
done
