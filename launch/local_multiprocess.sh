#!/usr/bin/env bash
# Runs N cooperating JAX processes on this machine (CPU devices, gloo collectives):
# the multi-host code path, exercised on one box.
#
#   launch/local_multiprocess.sh [--dry-run] [--devices-per-process D] [--port P] N -- mediafm train ...
set -euo pipefail

usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; }
dry_run=0; per_process=2; port=12355
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) dry_run=1; shift ;;
    --devices-per-process) per_process="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --) shift; break ;;
    *) if [[ -z "${n:-}" ]]; then n="$1"; shift; else break; fi ;;
  esac
done
[[ -n "${n:-}" && "$n" =~ ^[0-9]+$ && $# -gt 0 ]] || { usage >&2; exit 2; }

pids=()
for ((i = 0; i < n; i++)); do
  env=(JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=${per_process}"
       "MEDIAFM_COORDINATOR=localhost:${port}" "MEDIAFM_NUM_PROCESSES=${n}" "MEDIAFM_PROCESS_ID=${i}")
  if [[ $dry_run -eq 1 ]]; then
    printf 'env'; printf ' %q' "${env[@]}" "$@"; printf '\n'
  else
    env "${env[@]}" "$@" &
    pids+=($!)
  fi
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
