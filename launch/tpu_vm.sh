#!/usr/bin/env bash
# Creates, sets up and runs mediafm on every worker of a TPU VM pod slice.
#
#   launch/tpu_vm.sh [--dry-run] create|setup|run|delete --name NAME --zone ZONE \
#       [--type v5p-32] [--version v2-alpha-tpuv5] [--bucket gs://B] [--config experiments/configs/base.py]
#
# Store and run directory live in the bucket: gs://B/stores/<catalog>, gs://B/runs/<name>.
# jax.distributed.initialize() finds the pod's workers by itself.
set -euo pipefail

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
dry_run=0; type=v5p-32; version=v2-alpha-tpuv5; config=experiments/configs/base.py; repo=.
action="${1:-}"; [[ "$action" == "--dry-run" ]] && { dry_run=1; shift; action="${1:-}"; }
case "$action" in -h|--help) usage; exit 0 ;; create|setup|run|delete) shift ;; *) usage >&2; exit 2 ;; esac
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --name) name="$2"; shift 2 ;; --zone) zone="$2"; shift 2 ;;
    --type) type="$2"; shift 2 ;; --version) version="$2"; shift 2 ;;
    --bucket) bucket="$2"; shift 2 ;; --config) config="$2"; shift 2 ;;
    --store) store="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[[ -n "${name:-}" && -n "${zone:-}" ]] || { echo "--name and --zone are required" >&2; exit 2; }

run() { if [[ $dry_run -eq 1 ]]; then printf '%q ' "$@"; printf '\n'; else "$@"; fi; }
ssh_all() { run gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$1"; }

case "$action" in
  create) run gcloud compute tpus tpu-vm create "$name" --zone "$zone" --accelerator-type "$type" --version "$version" ;;
  setup)
    run gcloud compute tpus tpu-vm scp --recurse "$repo" "$name:~/mediafm-jax" --zone "$zone" --worker=all
    ssh_all "cd ~/mediafm-jax && python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'" ;;
  run)
    [[ -n "${bucket:-}" ]] || { echo "--bucket is required for run" >&2; exit 2; }
    ssh_all "cd ~/mediafm-jax && .venv/bin/mediafm train --config $config --store ${store:-$bucket/stores/catalog} --workdir $bucket/runs/$name" ;;
  delete) run gcloud compute tpus tpu-vm delete "$name" --zone "$zone" --quiet ;;
esac
