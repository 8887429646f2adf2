#!/usr/bin/env bash
# Rehearse a pod run on one machine: N processes of main.py joined by jax.distributed (CPU, gloo
# collectives), each with LOCAL_DEVICES fake CPU devices, on a free local port. Per-process logs go
# to WORKDIR/logs/process_<i>.log; if one process fails, the others are stopped and its exit status
# is returned. Ctrl-C / SIGTERM reach every process (each saves the same step and exits).
#   bash launch/local_multihost.sh 2 configs/demo.py workdir/mh                  # 2 processes x 2 devices
#   LOCAL_DEVICES=4 MODE=evaluate bash launch/local_multihost.sh 2 CONFIG WORKDIR [main.py flags...]
#   DRY_RUN=1 bash launch/local_multihost.sh ...     # print the commands only
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 NUM_PROCESSES CONFIG WORKDIR [main.py flags...]" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/common.sh"
n=$1; config=$2; workdir=$3; shift 3
[[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "NUM_PROCESSES must be a positive integer, got '$n'" >&2; exit 2; }
py="${PYTHON:-python}"
port="${PORT:-$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
devices="${LOCAL_DEVICES:-2}"
logs="$workdir/logs"
[ "${DRY_RUN:-0}" = "1" ] || mkdir -p "$logs"
pids=()
# TERM every process (each saves the same step and exits), then KILL whatever is still running after
# GRACE seconds (a process left blocked in a collective by a dead peer cannot act on TERM).
stop_all() {
  [ ${#pids[@]} -eq 0 ] && return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  ( sleep "${GRACE:-60}"; kill -KILL "${pids[@]}" 2>/dev/null ) > /dev/null 2>&1 &
  reaper=$!
}
reaper=""
forward() { [ ${#pids[@]} -eq 0 ] || kill -"$1" "${pids[@]}" 2>/dev/null || true; }
trap 'forward TERM' TERM
trap 'forward INT' INT
for ((i = 0; i < n; i++)); do
  cmd=(env JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=$devices ${XLA_FLAGS:-}"
       "$py" "$here/../main.py" --multihost --coordinator_address="127.0.0.1:$port" --num_processes="$n"
       --process_id="$i" --config="$config" --workdir="$workdir" --mode="${MODE:-train}" "$@")
  if [ "${DRY_RUN:-0}" = "1" ]; then
    run "${cmd[@]}"
  else
    "${cmd[@]}" > "$logs/process_$i.log" 2>&1 &
    pids+=($!)
  fi
done
[ "${DRY_RUN:-0}" = "1" ] && exit 0
echo "started $n processes (port $port, $devices devices each); logs in $logs/process_<i>.log" >&2
status=0
left=("${pids[@]}")
while [ ${#left[@]} -gt 0 ]; do
  done_pid=""
  if wait -n -p done_pid "${left[@]}"; then rc=0; else rc=$?; fi
  [ -n "$done_pid" ] || continue  # woken by a forwarded signal, not by an exit
  left=($(for p in "${left[@]}"; do [ "$p" = "$done_pid" ] || echo "$p"; done))
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
    status=$rc
    echo "process pid $done_pid exited with status $rc: stopping the others (see $logs)" >&2
    stop_all
  fi
done
[ -z "$reaper" ] || kill "$reaper" 2>/dev/null || true
exit "$status"
