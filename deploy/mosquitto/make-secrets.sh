#!/bin/sh
# Makes what a Mosquitto with TLS and passwords needs, and what its clients need to trust it:
#
#   make-secrets.sh DIR USER SUBJECT_ALT_NAMES      e.g. make-secrets.sh secrets faultline-bridge DNS:mosquitto
#
# DIR/ca.crt           a CA of its own (give it to every client: FAULTLINE_MQTT__CA_FILE)
# DIR/server.crt, .key the broker's certificate for SUBJECT_ALT_NAMES, signed by that CA
# DIR/passwd           Mosquitto's password file with USER and a random password
# DIR/bridge-password  that password (FAULTLINE_MQTT__PASSWORD_FILE)
# The CA's key is deleted once the certificate is signed. Needs openssl and mosquitto_passwd
# (Debian packages openssl and mosquitto, or the eclipse-mosquitto image). Add users with
# `mosquitto_passwd DIR/passwd NAME`. Used by scripts/services/svc.py (mosquitto-tls) too.
set -eu
dir=$1 user=$2 names=$3
days=825
mkdir -p "$dir"
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=Faultline MQTT CA" \
  -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=faultline-mqtt" \
  -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$names" > "$dir/server.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
  -CAcreateserial -days "$days" -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
rm -f "$dir/ca.key" "$dir/ca.srl" "$dir/server.csr" "$dir/server.ext"
password=$(openssl rand -hex 24)
mosquitto_passwd -c -b "$dir/passwd" "$user" "$password"
printf '%s\n' "$password" > "$dir/bridge-password"
chmod 644 "$dir/ca.crt" "$dir/server.crt"
