#!/usr/bin/env bash
# Multi-node GPU training without SLURM: run this on every node, one process per node
# (all local GPUs in that process), node 0's address as coordinator.
#
#   launch/gpu_multinode.sh [--dry-run] --coordinator HOST:PORT --nodes N --node-rank R -- \
#       --config experiments/configs/large.py --store /shared/store --workdir /shared/run
set -euo pipefail

usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; }
dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --coordinator) coordinator="$2"; shift 2 ;;
    --nodes) nodes="$2"; shift 2 ;;
    --node-rank) rank="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[[ -n "${coordinator:-}" && -n "${nodes:-}" && -n "${rank:-}" && $# -gt 0 ]] || { usage >&2; exit 2; }
(( rank < nodes )) || { echo "--node-rank must be < --nodes" >&2; exit 2; }

args=(.venv/bin/mediafm train "$@" --coordinator "$coordinator" --num-processes "$nodes" --process-id "$rank")
if [[ $dry_run -eq 1 ]]; then printf '%q ' "${args[@]}"; printf '\n'; else "${args[@]}"; fi
