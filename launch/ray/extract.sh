#!/usr/bin/env bash
# Runs `mediafm extract --ray` on a Ray cluster: `ray up` (launch/ray/cluster.yaml, AWS GPU
# workers) or a KubeRay RayJob (launch/ray/rayjob.yaml).
#
#   launch/ray/extract.sh [--dry-run] --cluster-yaml --videos DIR --out DIR [--workers N]
#   launch/ray/extract.sh [--dry-run] --kuberay --videos DIR --out DIR [--workers N] \
#       [--name mediafm-extract] [--image IMAGE] [--pvc catalog]
#
# VIDEOS and OUT_SRC are paths on the filesystem every node mounts (see docs/catalogs.md).
set -euo pipefail

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
here=$(cd "$(dirname "$0")" && pwd)
dry_run=0; mode=""; workers=4; name=mediafm-extract; pvc=catalog
image=rayproject/ray:2.60.0-py311-gpu
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --cluster-yaml) mode=up; shift ;; --kuberay) mode=kuberay; shift ;;
    --videos) videos="$2"; shift 2 ;; --out) out="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;; --name) name="$2"; shift 2 ;;
    --image) image="$2"; shift 2 ;; --pvc) pvc="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[[ -n "$mode" && -n "${videos:-}" && -n "${out:-}" ]] || { usage >&2; exit 2; }
[[ "$workers" =~ ^[1-9][0-9]*$ ]] || { echo "--workers must be a positive number" >&2; exit 2; }

run() { if [[ $dry_run -eq 1 ]]; then printf '%q ' "$@"; printf '\n'; else "$@"; fi; }
extract=(mediafm extract "$videos" "$out" --ray --workers "$workers")
command=$(printf '%q ' "${extract[@]}"); command=${command% }
if [[ $mode == up ]]; then
  run ray up -y "$here/cluster.yaml"
  run ray exec "$here/cluster.yaml" "$command"
else
  manifest=$(mktemp "${TMPDIR:-/tmp}/mediafm-rayjob-XXXXXX.yaml")
  sed -e "s|^  name: NAME|  name: $name|" -e "s|IMAGE|$image|g" -e "s|claimName: PVC|claimName: $pvc|g" \
      -e "s|WORKERS|$workers|g" -e "s|entrypoint: .*|entrypoint: $command|" \
      "$here/rayjob.yaml" > "$manifest"
  run kubectl apply -f "$manifest"
fi
