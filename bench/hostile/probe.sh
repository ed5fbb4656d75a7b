#!/usr/bin/env bash
# A probe's latency while 400 connections flood the server with 16 KiB messages, plain
# then TLS (bench/RESULTS.md, "Hostile clients"): server on core 0, flood and probe on
# core 1. Writes a throwaway certificate to /tmp/probe (tlsstall.py uses it too).
#   FLOOD='--pipeline 16' BIN=target/release/coop-echo bench/hostile/probe.sh
set -u
BIN=$(realpath "${BIN:-target/release/coop-echo}")
mkdir -p /tmp/probe && cd /tmp/probe
[ -f cert.pem ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout key.pem -out cert.pem 2>/dev/null
for mode in plain tls; do
  if [ $mode = tls ]; then S="--tls-cert cert.pem --tls-key key.pem"; C="--tls --insecure"; else S=""; C=""; fi
  taskset -c 0 $BIN --host 127.0.0.1 --port 0 -q $S > srv.log 2>&1 & SP=$!
  sleep 0.5
  P=$(grep -o "127.0.0.1:[0-9]*" srv.log | head -1 | cut -d: -f2)
  taskset -c 1 $BIN bench --port $P $C -c 400 -s 16384 -d 12 -q ${FLOOD:-} > flood.out 2>&1 & FP=$!
  sleep 3
  taskset -c 1 $BIN bench --port $P $C -c 1 --rate 20 -d 6 --json > probe-$mode.json 2>/dev/null
  wait $FP; kill $SP; wait $SP 2>/dev/null
  python3 -c "
import json; d=json.load(open('probe-$mode.json'))
lat=d.get('latency_us') or d.get('latency') or {}
print('$mode', {k:v for k,v in lat.items() if k in ('p50','p99','max')} if isinstance(lat,dict) else lat)"
done
