#!/usr/bin/env bash
# Where a compose v2 CLI exists (an ops machine; CI has none), let compose's own loader check
# docker-compose.yml in every profile. CI validates the same file without it: the pinned
# compose-spec schema plus the reference checks in tests/ops/.
set -euo pipefail
cd "$(dirname "$0")/.."
if docker compose version --short >/dev/null 2>&1; then
  compose=(docker compose)
elif docker-compose version --short 2>/dev/null | grep -q '^v\?2'; then
  compose=(docker-compose)
else
  echo "no compose v2 CLI here" >&2
  exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ops"
cp docker-compose.yml "$work/"
cp ops/stack.env "$work/ops/"
cp ops/compose.env.example "$work/ops/compose.env"  # the example stands in for the real one
for profiles in "" "--profile *"; do
  # shellcheck disable=SC2086
  (cd "$work" && "${compose[@]}" $profiles config --quiet)
  echo "compose config ${profiles:-(default profile)}: ok"
done
