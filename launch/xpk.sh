#!/usr/bin/env bash
# Runs mediafm training as an xpk workload on a GKE TPU cluster (one or more slices).
#
#   launch/xpk.sh [--dry-run] --cluster C --workload W --type v5p-32 [--slices 2] \
#       --bucket gs://B [--config experiments/configs/base.py] [--image IMAGE]
#
# With --slices > 1 the mesh's data axis spans the slices (DCN); set mesh.data to a
# multiple of the slice count.
set -euo pipefail

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }
dry_run=0; slices=1; type=v5p-32; config=experiments/configs/base.py; image=python:3.11
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --cluster) cluster="$2"; shift 2 ;; --workload) workload="$2"; shift 2 ;;
    --type) type="$2"; shift 2 ;; --slices) slices="$2"; shift 2 ;;
    --bucket) bucket="$2"; shift 2 ;; --config) config="$2"; shift 2 ;;
    --image) image="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[[ -n "${cluster:-}" && -n "${workload:-}" && -n "${bucket:-}" ]] || { usage >&2; exit 2; }
[[ "$slices" =~ ^[0-9]+$ ]] || { echo "--slices must be a number" >&2; exit 2; }

command="pip install -q -e '.[tpu]' && mediafm train --config $config --store $bucket/stores/catalog --workdir $bucket/runs/$workload"
args=(xpk workload create --cluster "$cluster" --workload "$workload" --tpu-type "$type"
      --num-slices "$slices" --docker-image "$image" --command "$command")
if [[ $dry_run -eq 1 ]]; then printf '%q ' "${args[@]}"; printf '\n'; else "${args[@]}"; fi
