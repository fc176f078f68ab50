#!/usr/bin/env bash
# Prepare this Debian 12 host for siemhub: apt packages, kernel header links, kernel filesystems.
# Idempotent: every step checks before it acts, so a second run takes well under a second.
set -euo pipefail

APT_PACKAGES=(python3-bpfcc bpfcc-tools linux-headers-amd64 pahole bpftool kcat libpython3.11 procps)
# Grafana/alerting tests (issue 15): promtool and a real Prometheus server (never started as a service:
# the tests run their own on 127.0.0.1).
APT_PACKAGES+=(prometheus)
APT_PACKAGES+=(openssl)  # issue 14: self-signed certificates for the Splunk TLS tests
# deploy/kubernetes tests render the Kustomize overlays with `kubectl kustomize`: Debian's kubectl
# (kubernetes-client), unless a kubectl is installed already (another kubectl package owns the same path).
command -v kubectl >/dev/null 2>&1 || APT_PACKAGES+=(kubernetes-client)

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-host: must run as root (eBPF, apt, mounts)" >&2
    exit 1
  fi
}

install_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup-host: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

link_headers() {
  # bcc compiles against /lib/modules/$(uname -r)/build; no headers exist for this kernel, so the
  # newest installed Debian headers stand in. Struct layouts come from BTF, not from these headers.
  local kver hdr common mod
  kver=$(uname -r)
  mod="/lib/modules/$kver"
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
  common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$hdr" ] || [ -z "$common" ]; then
    echo "setup-host: no kernel headers under /usr/src after install" >&2
    exit 1
  fi
  mkdir -p "$mod"
  [ -e "$mod/build" ] || ln -sfn "$hdr" "$mod/build"
  [ -e "$mod/source" ] || ln -sfn "$common" "$mod/source"
}

mount_fs() {
  local fstype=$1 dir=$2 probe=$3
  if [ ! -e "$dir/$probe" ]; then
    mkdir -p "$dir"
    mount -t "$fstype" "$fstype" "$dir" 2>/dev/null || echo "setup-host: could not mount $fstype on $dir" >&2
  fi
}

need_root
install_packages
link_headers
mount_fs tracefs /sys/kernel/tracing events
mount_fs debugfs /sys/kernel/debug tracing
mount_fs securityfs /sys/kernel/security lsm
