#!/usr/bin/env bash
# Commit data/libero_train (records + manifest) every INTERVAL seconds while the generate.py workers named by
# PID in PIDFILE are alive, then once more and exit. Stages and commits that path only (git commit -- PATH), so
# other staged or modified files in the working tree are left alone.
#   nohup tools/libero/commit_records.sh tools/libero/out/train_gen.pids 1200 >> tools/libero/out/commit.log 2>&1 &
set -u
cd "$(dirname "$0")/../.."
PIDFILE=${1:-tools/libero/out/train_gen.pids}
INTERVAL=${2:-1200}
DIR=data/libero_train

commit() {
  [ -f "$DIR/manifest.jsonl" ] || return 0
  if [ -z "$(git status --porcelain -- "$DIR")" ]; then return 0; fi
  local n a
  n=$(find "$DIR" -name 'task*_init*.npz' | wc -l)
  a=$(grep -c . "$DIR/manifest.jsonl")
  for try in 1 2 3 4 5; do
    if git add -- "$DIR" && git commit -q -m "data/libero_train: $n training-episode records, $a manifest lines (scripted expert, inits 10-49; automatic commit while generate.py runs)" -- "$DIR"; then
      echo "$(date +%H:%M:%S) committed $n records: $(git rev-parse --short HEAD)"
      return 0
    fi
    sleep 10
  done
  echo "$(date +%H:%M:%S) commit failed (index lock?), will retry next round"
}

alive() {
  for p in $(cat "$PIDFILE" 2>/dev/null); do
    if kill -0 "$p" 2>/dev/null; then return 0; fi
  done
  return 1
}

while alive; do
  sleep "$INTERVAL"
  commit
done
commit
echo "$(date +%H:%M:%S) workers gone, committer exits"
