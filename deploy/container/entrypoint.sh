#!/bin/sh
# Entry point of the siemhub image: for the agent (`run`), point bcc at kernel headers, then exec siemhub.
# bcc compiles against /lib/modules/$(uname -r)/build. Preferred: the host's own headers, when the
# DaemonSet mounts the host's /lib/modules and /usr/src under /host; otherwise the Debian headers in
# the image (struct offsets come from BTF, so older headers still compile correct programs).
set -eu
if [ "${1:-}" = "run" ] && [ -w /lib/modules ]; then
  kver=$(uname -r)
  mod="/lib/modules/$kver"
  if [ ! -e "$mod/build" ]; then
    mkdir -p "$mod"
    host_build=$(readlink "/host/lib/modules/$kver/build" 2>/dev/null || true)
    if [ -z "$host_build" ] && [ -d "/host/lib/modules/$kver/build" ]; then
      ln -sfn "/host/lib/modules/$kver/build" "$mod/build"   # a directory, not a link, on this host
      echo "siemhub-entrypoint: kernel headers from the host (/host/lib/modules/$kver/build)" >&2
    elif [ -n "$host_build" ] && [ -d "/host$host_build" ]; then
      ln -sfn "/host$host_build" "$mod/build"
      host_source=$(readlink "/host/lib/modules/$kver/source" 2>/dev/null || true)
      [ -n "$host_source" ] && [ -d "/host$host_source" ] && ln -sfn "/host$host_source" "$mod/source"
      echo "siemhub-entrypoint: kernel headers from the host (/host$host_build)" >&2
    else
      hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
      common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1)
      if [ -z "$hdr" ] || [ -z "$common" ]; then
        echo "siemhub-entrypoint: no kernel headers in the image or on the host: rebuild the image" >&2
        exit 1
      fi
      ln -sfn "$hdr" "$mod/build"
      ln -sfn "$common" "$mod/source"
      echo "siemhub-entrypoint: kernel headers from the image ($hdr); struct offsets come from BTF" >&2
    fi
  fi
fi
exec siemhub "$@"
