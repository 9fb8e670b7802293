#!/usr/bin/env bash
# Drops databases left by earlier test runs (named bc_test_*). Each test creates its own database; a test
# that fails or is interrupted can leave one behind.
set -euo pipefail
url="$1"
psql "$url" -Atqc "select datname from pg_database where datname like 'bc\_test\_%'" 2>/dev/null | while read -r db; do
    psql "$url" -qc "drop database if exists \"$db\" with (force)" >/dev/null 2>&1 || true
done
