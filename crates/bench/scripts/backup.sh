#!/usr/bin/env bash
# Backup and restore wall time of a data folder of about 1 GB (docs/backup.md, "Measured"),
# beside plain references in the same run. The folder is made by real traffic: attachments
# sent through a real server with `redoubt send --file`, and a database grown by
# `redoubt-bench room` against the same server. Then, with that server still running:
# `server backup`, `server backup verify`, `server restore`, and `tar` / `cp -r` of the folder.
# Uses the release binaries (cargo build --release --locked -p redoubt-cli -p redoubt-bench).
#
#   crates/bench/scripts/backup.sh [FILES] [FILE_MIB] [MESSAGES]     (defaults 40 24 30000)
set -euo pipefail
cd "$(dirname "$0")/../../.."
files=${1:-40}
file_mib=${2:-24}
messages=${3:-30000}
redoubt=${REDOUBT:-$PWD/target/release/redoubt}
bench=${REDOUBT_BENCH:-$PWD/target/release/redoubt-bench}
root=$(mktemp -d /tmp/redoubt-backup-bench.XXXXXX)
data=$root/data
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$root"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

start_server() {
  REDOUBT_KT_EPOCH_MS=20 "$redoubt" server --data "$data" --listen 127.0.0.1:$port --no-qr >> "$root/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 150); do [ -s "$data/admin-activation.txt" ] && (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && return; sleep 0.2; done
  echo "the server did not start"; exit 1
}
start_server
"$redoubt" --profile "$root/admin" enroll "$(cat "$data/admin-activation.txt")" --json > /dev/null
for user in alice bob; do
  code=$("$redoubt" --profile "$root/admin" admin user add $user --no-qr --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["code"])')
  "$redoubt" --profile "$root/$user" enroll "$code" --name $user --json > /dev/null
done
"$redoubt" --profile "$root/alice" group create big --members bob --json > /dev/null
head -c $((file_mib * 1024 * 1024)) /dev/urandom > "$root/payload.bin"
for i in $(seq 1 "$files"); do
  printf '%08d' "$i" | dd of="$root/payload.bin" bs=1 conv=notrunc status=none   # a new file each time
  "$redoubt" --profile "$root/alice" send big --file "$root/payload.bin" --json > /dev/null
done
# The load generator sends as fast as acknowledged: lift the per-device request rate.
kill "$server_pid"; wait "$server_pid" || true
sed -i 's/^# device_requests_per_second = .*/device_requests_per_second = 1000000/; s/^# device_request_burst = .*/device_request_burst = 1000000/' "$data/redoubt.toml"
start_server
"$bench" --server 127.0.0.1:$port --admin-profile "$root/admin" room --size "$messages" --users 10 > "$root/bench.txt" 2>&1 \
  || { tail -20 "$root/bench.txt"; exit 1; }

echo "a long measurement passphrase" > "$root/passphrase"
bytes=$(du -sb "$data" | cut -f1)
echo "folder: $bytes bytes in $(find "$data" -type f | wc -l) files; database $(stat -c %s "$data/redoubt.db") bytes (+ WAL)"
timed() { local s e; s=$(date +%s.%N); sh -c "$1" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
mbps() { echo "scale=1; $bytes / 1000000 / $1" | bc; }
cat $(find "$data" -type f) > /dev/null   # the page cache warm for every contender
tar_wc=$(timed "tar cf - -C $root data | wc -c")
cp_r=$(timed "cp -r $data $root/cp-copy"); rm -rf "$root/cp-copy"; sync
tar_sync=$(timed "tar cf $root/ref.tar -C $root data && sync $root/ref.tar"); rm -f "$root/ref.tar"; sync
backup=$(timed "$redoubt server backup --data $data --out $root/backup.rdb --passphrase-file $root/passphrase --json 2>/dev/null"); sync
verify=$(timed "$redoubt server backup verify $root/backup.rdb --passphrase-file $root/passphrase --json 2>/dev/null")
restore=$(timed "$redoubt server restore --in $root/backup.rdb --data $root/restored --passphrase-file $root/passphrase --json 2>/dev/null")
echo "tar cf - | wc -c     ${tar_wc} s  $(mbps "$tar_wc") MB/s"
echo "cp -r                ${cp_r} s  $(mbps "$cp_r") MB/s"
echo "tar cf FILE; sync    ${tar_sync} s  $(mbps "$tar_sync") MB/s"
echo "server backup        ${backup} s  $(mbps "$backup") MB/s  ($(echo "scale=2; $backup / $tar_sync" | bc)x the time of tar+sync)"
echo "server backup verify ${verify} s  $(mbps "$verify") MB/s"
echo "server restore       ${restore} s  $(mbps "$restore") MB/s  ($(echo "scale=2; $restore / $tar_sync" | bc)x the time of tar+sync)"
