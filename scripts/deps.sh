#!/usr/bin/env bash
# Installs the Debian 12 packages Stele needs to build, test and benchmark; only
# what is missing, so it is cheap to run before every build. Needs root for apt-get.
set -euo pipefail
pkgs=(build-essential cmake pkg-config clang libclang-rt-14-dev clang-format curl
      libsodium-dev libssl-dev libmicrohttpd-dev libjansson-dev libxxhash-dev libzstd-dev
      zlib1g-dev libcmocka-dev python3 gzip
      prometheus # promtool + prometheus: the differential PromQL test
      spin)      # checks the Promela models in tests/model
[ "${STELE_BENCH_DEPS:-0}" = 1 ] && pkgs+=(victoria-metrics)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "stele: deps: missing packages: ${missing[*]}; run this script as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
