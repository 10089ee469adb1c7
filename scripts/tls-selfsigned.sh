#!/usr/bin/env bash
# Makes a self-signed certificate for localhost and 127.0.0.1 in DIR (cert.pem, key.pem; P-256,
# valid one day), for trying tls:// by hand and for `arpc-bench --transport tls`. Not for
# production: a real server's certificate comes from a CA its clients trust.
#   usage: scripts/tls-selfsigned.sh DIR
set -euo pipefail
dir=${1:?usage: $0 DIR}
mkdir -p "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
echo "$dir/cert.pem $dir/key.pem"
