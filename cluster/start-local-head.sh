#!/usr/bin/env bash
# Start a Ray head on this machine, with the dashboard (the job server), for trying
# `gammaface submit` without a cluster:
#   cluster/start-local-head.sh            # then: gammaface submit jobs/smoke.yaml --address http://127.0.0.1:8265
#   ray stop                               # when done
set -euo pipefail
# An earlier ray.init() can leave a token behind that would switch authentication on.
export RAY_AUTH_MODE=disabled
export RAY_USAGE_STATS_ENABLED=0
PORT="${RAY_PORT:-6379}"
DASHBOARD_PORT="${RAY_DASHBOARD_PORT:-8265}"
NUM_CPUS="${RAY_NUM_CPUS:-$(nproc)}"
ray start --head --port="$PORT" --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
  --num-cpus="$NUM_CPUS" --include-dashboard=true --disable-usage-stats
echo "job server: http://127.0.0.1:${DASHBOARD_PORT}"
