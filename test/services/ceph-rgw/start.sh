#!/usr/bin/env bash
# Bootstrap a throw-away one-node Ceph cluster (1 mon, 1 osd, no mgr) plus a
# RADOS Gateway (beast) on 127.0.0.1, then create an S3 user. The S3 tests
# run it once per vitest run (global-setup.ts, on free ports, in /var/tmp) and
# stop it with stop.sh at the end; it can also be run by hand.
#
# Env knobs:
#   RGW_DIR          cluster data dir            (default ${TMPDIR:-/tmp}/lowtide-rgw)
#   RGW_PORT         S3 HTTP port                (default 7480)
#   MON_PORT         mon msgr2 port (v1 = +1)    (default 13300)
#   OSD_STORE        bluestore | memstore        (default bluestore)
#   OSD_BLOCK        file | loop (bluestore only)(default file)
#   OSD_SIZE_GB      size of the sparse block file / memstore (default 10 / 2)
#   S3_ACCESS_KEY / S3_SECRET_KEY                (defaults below)
# Writes $RGW_DIR/env (export lines: S3_ENDPOINT, keys) on success.
# On failure it prints log tails and runs stop.sh (set RGW_KEEP_ON_FAIL=1 to keep).
# Requires (Debian 12): apt-get install --no-install-recommends \
#   ceph-mon ceph-osd radosgw ceph-common curl      (Ceph 16.2.15)
set -euo pipefail

D=${RGW_DIR:-${TMPDIR:-/tmp}/lowtide-rgw}
RGW_PORT=${RGW_PORT:-7480}
MON_PORT=${MON_PORT:-13300}
OSD_STORE=${OSD_STORE:-bluestore}
OSD_BLOCK=${OSD_BLOCK:-file}
AK=${S3_ACCESS_KEY:-TESTACCESSKEY0000001}
SK=${S3_SECRET_KEY:-testsecretkey0000000000000000000000000001}
HERE=$(cd "$(dirname "$0")" && pwd)
T0=$(date +%s%N)
log() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); printf '[ceph-rgw start %3d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"; }
die() {
  echo "start: ERROR: $*" >&2
  for f in "$D"/log/*.log; do [ -s "$f" ] && { echo "--- tail $f" >&2; tail -n 15 "$f" >&2; }; done
  [ "${RGW_KEEP_ON_FAIL:-0}" = 1 ] || RGW_DIR="$D" "$HERE/stop.sh" >&2
  exit 1
}

# wait_for <timeout-s> <description> <command...>; fails fast if a daemon died
wait_for() {
  local t=$1 what=$2; shift 2
  local end=$(( $(date +%s) + t ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$end" ] && die "timeout (${t}s) waiting for $what"
    local n; for n in $STARTED; do
      kill -0 "$(cat "$D/run/$n.pid" 2>/dev/null || echo 0)" 2>/dev/null \
        || die "daemon $n died while waiting for $what"
    done
    sleep 0.25
  done
}
STARTED=""

if [ -e "$D" ]; then
  if [ -e "$D/run" ] && ls "$D"/run/*.pid >/dev/null 2>&1; then
    echo "start: ERROR: $D exists with pid files; run stop.sh first" >&2; exit 1
  fi
  rm -rf "$D"
fi
# refuse to start if something already listens on our ports
for port in "$RGW_PORT" "$MON_PORT" "$((MON_PORT + 1))"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "start: ERROR: 127.0.0.1:$port is already in use" >&2; exit 1
  fi
done
mkdir -p "$D"/{log,run,mon.a,osd.0,rgw}

FSID=$(uuidgen)
CONF=$D/ceph.conf
KEYRING=$D/keyring
export CEPH_CONF=$CONF   # so plain `ceph`/`radosgw-admin` find the cluster

OSD_EXTRA=""
if [ "$OSD_STORE" = memstore ]; then
  OSD_EXTRA="osd objectstore = memstore
memstore device bytes = $(( ${OSD_SIZE_GB:-2} * 1024 * 1024 * 1024 ))"
else
  if [ "$OSD_BLOCK" = loop ]; then
    truncate -s "${OSD_SIZE_GB:-10}G" "$D/osd0.img"
    LOOP=$(losetup --find --show "$D/osd0.img")
    echo "$LOOP" > "$D/loopdev"
    BLOCK_LINES="bluestore block path = $LOOP
bluestore block create = false"
  else
    # NB: must NOT be $D/osd.0/block - bluestore symlinks osd_data/block -> block path
    BLOCK_LINES="bluestore block path = $D/osd0.img
bluestore block create = true
bluestore block size = $(( ${OSD_SIZE_GB:-10} * 1024 * 1024 * 1024 ))"
  fi
  OSD_EXTRA="osd objectstore = bluestore
$BLOCK_LINES
bluestore block db create = false
bluestore block wal create = false
bluestore fsck on mount = false
osd memory target = 939524096"
fi

cat > "$CONF" <<EOF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MON_PORT,v1:127.0.0.1:$((MON_PORT + 1))]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $KEYRING
run dir = $D/run
admin socket = $D/run/\$name.asok
pid file = $D/run/\$name.pid
log file = $D/log/\$name.log
mon cluster log file = $D/log/cluster.log
log to stderr = false
err to stderr = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon max pg per osd = 1000
osd crush chooseleaf type = 0
mon data avail warn = 2
mon data avail crit = 1
# single mon: commit map changes quickly (default batches for 1 s, which makes
# radosgw's first-start pool creation take ~1 s per step)
paxos propose interval = 0.05
paxos min wait = 0.01

[mon]
mon data = $D/mon.\$id
mon initial members = a

[osd]
osd data = $D/osd.\$id
$OSD_EXTRA

[client.rgw.s3]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $D/rgw
rgw dns name = localhost
rgw enable usage log = false
rgw thread pool size = 64
EOF

log "creating keys"
ceph-authtool --create-keyring "$KEYRING" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$KEYRING" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
ceph-authtool "$KEYRING" --gen-key -n osd.0 \
  --cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *' >/dev/null
ceph-authtool "$KEYRING" --gen-key -n client.rgw.s3 \
  --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null

log "mon mkfs + start"
monmaptool --create --fsid "$FSID" \
  --addv a "[v2:127.0.0.1:$MON_PORT,v1:127.0.0.1:$((MON_PORT + 1))]" "$D/monmap" >/dev/null
ceph-mon -c "$CONF" --mkfs -i a --monmap "$D/monmap" --keyring "$KEYRING"
ceph-mon -c "$CONF" -i a >>"$D/log/mon.a.stdio" 2>&1   # daemonizes, writes run/mon.a.pid
STARTED="mon.a"
wait_for 30 "monitor quorum" timeout 10 ceph --connect-timeout 5 quorum_status

log "osd mkfs + start ($OSD_STORE${LOOP:+ on $LOOP})"
OSD_UUID=$(uuidgen)
OSD_SECRET=$(ceph-authtool "$KEYRING" -p -n osd.0)
OSD_ID=$(echo "{\"cephx_secret\": \"$OSD_SECRET\"}" | ceph osd new "$OSD_UUID" -i -)
[ "$OSD_ID" = 0 ] || die "unexpected osd id '$OSD_ID'"
ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$OSD_UUID" >"$D/log/osd-mkfs.out" 2>&1 \
  || { cat "$D/log/osd-mkfs.out" >&2; die "osd mkfs failed"; }
ceph-osd -c "$CONF" -i 0 >>"$D/log/osd.0.stdio" 2>&1   # daemonizes, writes run/osd.0.pid
STARTED="$STARTED osd.0"
osd_up() { ceph osd dump --format json | grep -q '"up":1'; }
wait_for 60 "osd.0 up" osd_up

log "radosgw start"
radosgw -c "$CONF" -n client.rgw.s3 >>"$D/log/rgw.stdio" 2>&1  # daemonizes, writes run/client.rgw.s3.pid
STARTED="$STARTED client.rgw.s3"
# anonymous GET / is answered with 403 AccessDenied once the gateway is up;
# require an RGW-style x-amz-request-id header so that we never mistake another server for it
http_up() { curl -s -D - -o /dev/null "http://127.0.0.1:$RGW_PORT/" | grep -qi '^x-amz-request-id:'; }
wait_for 120 "radosgw HTTP on 127.0.0.1:$RGW_PORT" http_up
log "radosgw answers HTTP"

radosgw-admin -c "$CONF" -n client.admin user create --uid=test --display-name="Test User" \
  --access-key="$AK" --secret="$SK" >"$D/user.json" 2>"$D/log/user-create.err" \
  || { cat "$D/log/user-create.err" >&2; die "user create failed"; }

# First authenticated S3 request (ListBuckets, SigV4) - retried briefly, as the
# user metadata may need a moment to propagate to the running gateway.
# (curl 7.88 does not send x-amz-content-sha256 itself; RGW needs it for SigV4)
s3ok() { curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AK:$SK" \
  -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "http://127.0.0.1:$RGW_PORT/" | grep -q ListAllMyBucketsResult; }
wait_for 30 "authenticated S3 ListBuckets" s3ok
log "authenticated S3 request OK"

cat > "$D/env" <<EOF
export S3_ENDPOINT=http://127.0.0.1:$RGW_PORT
export S3_ACCESS_KEY=$AK
export S3_SECRET_KEY=$SK
export S3_REGION=us-east-1
export CEPH_CONF=$CONF
EOF
echo "S3_ENDPOINT=http://127.0.0.1:$RGW_PORT"
echo "S3_ACCESS_KEY=$AK"
echo "S3_SECRET_KEY=$SK"
echo "(source $D/env for these as exports)"
