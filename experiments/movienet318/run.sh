#!/usr/bin/env bash
# MovieNet-318 end to end: prepare -> ingest -> train (190 train films) -> embed -> probe.
#
#   experiments/movienet318/run.sh MOVIENET_DIR MOVIELENS_DIR OUT [extra mediafm train args]
#
# Needs the `movienet` extra (pip install -e '.[movienet]'). Prepare is cached per film,
# so a rerun (or a resumed interrupted run) skips the text embedding it has done.
set -euo pipefail
if [[ $# -lt 3 || "$1" == "-h" || "$1" == "--help" ]]; then sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 2; fi
movienet="$1"; movielens="$2"; out="$3"; shift 3
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
start=$(date +%s)
python "$here/prepare.py" --movienet "$movienet" --movielens "$movielens" --out "$out/src"
mediafm ingest "$out/src" "$out/store" --overwrite
mediafm info "$out/store"
mediafm train --config "$root/experiments/configs/movienet.py" --store "$out/store" --workdir "$out/run" "$@"
# the readout is chosen on validation films among all of them (the structure readouts too)
# and recorded in the run; embed then uses it
mediafm probe --workdir "$out/run" --store "$out/store" --tasks "$out/src/probes.json" \
  --clips "$out/src/clips.jsonl" --out "$out/report" --choose-readout all --overwrite
mediafm embed --workdir "$out/run" --store "$out/store" --out "$out/emb" --overwrite
echo "total: $(( $(date +%s) - start )) s"
