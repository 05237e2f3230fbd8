#!/usr/bin/env bash
# Both README commands as a new user meets them: each in its own clean clone of HEAD, beside a copy of
# ../shared, with a new venv and no pip cache, run one after the other (never concurrently) and timed.
#   bash scripts/check_fresh.sh [WORKDIR]     (default: a new temporary folder; kept for inspection)
#   TARGETS="test run" bash scripts/check_fresh.sh   (another order, or one of them)
set -euo pipefail
repo=$(git rev-parse --show-toplevel)
[ -d "$repo/../shared/data" ] || { echo "check-fresh: $repo/../shared/data is missing" >&2; exit 1; }
[ -z "$(git -C "$repo" status --porcelain --untracked-files=no)" ] \
  || echo "check-fresh: note: uncommitted changes are not in the clones (they test HEAD)" >&2
work=${1:-$(mktemp -d "${TMPDIR:-/tmp}/memsig-fresh.XXXXXX")}
mkdir -p "$work"
cp -r "$repo/../shared" "$work/shared"
chmod -R u+w "$work/shared"
export PIP_NO_CACHE_DIR=1
status=0
for target in ${TARGETS:-run test}; do
  clone="$work/$target"
  git clone --quiet "$repo" "$clone"
  start=$(date +%s)
  set +e
  (cd "$clone" && make "$target") > "$work/$target.log" 2>&1
  rc=$?
  set -e
  echo "make $target at $(git -C "$clone" rev-parse --short HEAD): exit $rc, $(( $(date +%s) - start )) s (log: $work/$target.log)"
  tail -n 3 "$work/$target.log" | sed 's/^/    /'
  [ $rc = 0 ] || status=1
done
echo "clones in $work"
exit $status
