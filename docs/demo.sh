#!/bin/sh
# Three Concord regions on one machine (make demo). Ctrl-C stops them.
#   region A: redis-cli -p 7001   (NATS for peers on 4301)
#   region B: redis-cli -p 7002   (NATS on 4302)
#   region C: redis-cli -p 7003   (NATS on 4303)
set -eu
BIN=${BIN:-./concord}
DIR=${DEMO_DIR:-/tmp/concord-demo}
mkdir -p "$DIR"
pids=""
for r in A:7001:4301 B:7002:4302 C:7003:4303; do
	name=${r%%:*}; rest=${r#*:}; port=${rest%%:*}; nats=${rest#*:}
	peers=""
	for o in A:4301 B:4302 C:4303; do
		[ "${o%%:*}" = "$name" ] || peers="$peers --peer ${o%%:*}=nats://127.0.0.1:${o#*:}"
	done
	$BIN --region "$name" --addr 127.0.0.1:$port --dir "$DIR/$name" --peer-listen 127.0.0.1:$nats $peers --log-format console &
	pids="$pids $!"
done
trap 'kill $pids 2>/dev/null; wait' INT TERM
sleep 1
cat <<'MSG'

Three regions are running. Try a concurrent write:

  redis-cli -p 7001 INCRBY visits 5        # region A
  redis-cli -p 7002 INCRBY visits 7        # region B
  redis-cli -p 7003 GET visits             # region C: "12" -- every increment counts

  redis-cli -p 7001 SET color red ; redis-cli -p 7002 SADD color blue
  redis-cli -p 7003 TYPE color             # the later type-creating write wins everywhere
  redis-cli -p 7003 CONCORD CONFLICTS      # ...and the resolution is listed
  redis-cli -p 7001 INFO replication       # links, lag, watermarks per peer
  printf 'SET k v\nWAIT 2 1000\n' | redis-cli -p 7001   # WAIT: both other regions applied it

Ctrl-C stops all three.
MSG
wait
