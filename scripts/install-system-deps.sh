#!/usr/bin/env bash
# Installs the Debian packages the test suite drives for real, only when they are missing.
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# Prometheus itself (tests/e2e/test_monitoring.py runs one) and promtool (config and rule checks).
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need+=(prometheus)
# Alertmanager, the notifier's receiver (scripts/services/svc.py starts it for tests/notify).
[ -x /usr/bin/prometheus-alertmanager ] || need+=(prometheus-alertmanager)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
