#!/usr/bin/env bash
# Cluster benchmarks that need several processes (BENCHMARKS.md, "Several nodes"):
#   sessions  — three `redoubt server` nodes on one PostgreSQL, one load generator per node
#               (each process is bound by the same open-file limit), sessions summed;
#   failover  — sessions on one node, that node SIGKILLed, every session reconnected to
#               another node and caught up (the probe's missed message fetched).
# Uses the release binaries (cargo build --release --locked -p redoubt-cli -p redoubt-bench)
# and PostgreSQL from Debian's packages, started here in a temporary folder on 127.0.0.1.
#
#   crates/bench/scripts/cluster.sh [SESSIONS_PER_NODE] [FAILOVER_SESSIONS]
set -euo pipefail
cd "$(dirname "$0")/../../.."
per_node=${1:-18500}
failover_sessions=${2:-15000}
redoubt=$PWD/target/release/redoubt
bench=$PWD/target/release/redoubt-bench
[ -x "$redoubt" ] && [ -x "$bench" ] || { echo "build first: cargo build --release --locked -p redoubt-cli -p redoubt-bench" >&2; exit 1; }

work=$(mktemp -d /tmp/redoubt-cluster-bench.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    [ -n "${pg_bin:-}" ] && as_pg "$pg_bin/pg_ctl" stop -m immediate -D "$work/pg" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# PostgreSQL: fsync and synchronous_commit on (what is measured), as the postgres user when root.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$work/pg" && chmod 700 "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres "$work" "$work/pg"
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$pg_bin/initdb" -D "$work/pg" -A trust -U postgres --no-sync >/dev/null
as_pg "$pg_bin/pg_ctl" start -w -D "$work/pg" -l "$work/pg/log" \
    -o "-h 127.0.0.1 -p $pg_port -k $work/pg -c max_connections=200 -c fsync=on -c synchronous_commit=on" >/dev/null
as_pg "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -qc "CREATE DATABASE redoubt" >/dev/null
export REDOUBT_DATABASE="postgres://postgres@127.0.0.1:$pg_port/redoubt"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ports=()
start_node() { # index
    local data="$work/node$1" port
    port=$(free_port)
    ports[$1]=$port
    if [ "$1" != 0 ]; then
        mkdir -p "$data"
        cp -r "$work/node0/redoubt.toml" "$work/node0/org-root.key" "$work/node0/tls" "$data/"
    fi
    "$redoubt" server --data "$data" --listen "127.0.0.1:$port" --no-qr >"$work/node$1.log" 2>&1 &
    pids[$1]=$!
    for _ in $(seq 1 300); do
        (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "node $1 did not start" >&2; cat "$work/node$1.log" >&2; exit 1
}
# The load a benchmark makes is far past a device's request guard, and each node holds
# more sessions than the default connections_max.
mkdir -p "$work/node0"
cat >"$work/node0/redoubt.toml" <<'TOML'
[limits]
connections_max = 1000000
device_requests_per_second = 1000000
device_request_burst = 1000000
TOML
start_node 0
for _ in $(seq 1 100); do [ -s "$work/node0/admin-activation.txt" ] && break; sleep 0.1; done
start_node 1
start_node 2
"$redoubt" --profile "$work/admin" enroll "$(cat "$work/node0/admin-activation.txt")" --json >/dev/null
sleep 6 # a heartbeat: every node lists the others

echo "== sessions: $per_node per node, three nodes, one load generator per node"
for i in 0 1 2; do
    "$bench" --json --server "127.0.0.1:${ports[$i]}" --admin-profile "$work/admin" --server-pid "${pids[$i]}" \
        sessions --size "$per_node" --hold-s 10 >"$work/sessions$i.json" 2>"$work/sessions$i.err" &
    loaders[$i]=$!
done
status=0
for i in 0 1 2; do wait "${loaders[$i]}" || status=1; done
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
total_held = total_asked = 0
for i in range(3):
    try:
        r = json.load(open(f"{work}/sessions{i}.json"))
    except Exception as e:
        print(f"node {i}: no report ({e}):", open(f"{work}/sessions{i}.err").read()[-2000:])
        continue
    res = r["results"]
    total_held += res["sessions_held"]
    total_asked += res["sessions_requested"]
    print(f"node {i}: ok={r['ok']} held={res['sessions_held']} failed={res['sessions_failed']} "
          f"ramp_s={res['ramp_s']} handshakes_per_s={res['handshakes_per_s']} "
          f"probe_delivery_ms={res.get('probe_delivery')} commit={r['machine']['commit'][:7]}")
print(f"sessions held across the cluster: {total_held} of {total_asked}")
PY
"$redoubt" --profile "$work/admin" admin cluster list

echo "== failover: $failover_sessions sessions on node 0, node 0 killed, all to node 1"
"$bench" --json --server "127.0.0.1:${ports[0]}" --admin-profile "$work/admin" --server-pid "${pids[0]}" \
    reconnect-storm --size "$failover_sessions" --hold-s 2 --kill-pid "${pids[0]}" \
    --failover-to "127.0.0.1:${ports[1]}" >"$work/failover.json" 2>"$work/failover.err" || status=1
cat "$work/failover.json"; tail -5 "$work/failover.err"
exit $status
