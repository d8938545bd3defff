#!/usr/bin/env bash
# Stop the daemons started by start.sh (only the PIDs in its pid files,
# and only if the process name still matches), detach its loop device (if
# any) and remove the cluster directory.
set -uo pipefail
D=${RGW_DIR:-${TMPDIR:-/tmp}/lowtide-rgw}
[ -d "$D" ] || { echo "stop: $D does not exist, nothing to do"; exit 0; }

# term_and_wait "<pidfile>:<comm>" ... : SIGTERM all given daemons, wait up to
# 15 s for them to exit, then SIGKILL any survivor.
term_and_wait() {
  local spec pf comm pid pids=() names=() i
  for spec in "$@"; do
    pf=${spec%%:*}; comm=${spec#*:}
    [ -f "$pf" ] || continue
    pid=$(cat "$pf")
    if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]; then
      kill -TERM "$pid" 2>/dev/null && { pids+=("$pid"); names+=("$comm"); }
    fi
    rm -f "$pf"      # daemons usually remove it themselves on clean exit
  done
  for i in $(seq 1 150); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "stop: ${names[$i]} (${pids[$i]}) ignored SIGTERM, sending SIGKILL"
      kill -KILL "${pids[$i]}" 2>/dev/null
      sleep 0.2
    fi
    echo "stop: stopped ${names[$i]} (pid ${pids[$i]})"
  done
}

# Order matters: radosgw first (if the osd goes away under it, radosgw hangs
# on shutdown until SIGKILLed), then the osd (it reports to the mon that it is
# going down; with the mon gone it waits for a timeout), then the mon.
term_and_wait "$D/run/client.rgw.s3.pid:radosgw"
term_and_wait "$D/run/osd.0.pid:ceph-osd"
term_and_wait "$D/run/mon.a.pid:ceph-mon"

if [ -f "$D/loopdev" ]; then
  LOOP=$(cat "$D/loopdev")
  if losetup "$LOOP" 2>/dev/null | grep -q "$D/osd0.img"; then
    losetup -d "$LOOP" && echo "stop: detached $LOOP"
  fi
fi
rm -rf "$D"
echo "stop: removed $D"
