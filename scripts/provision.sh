#!/usr/bin/env bash
# Makes what the full test suite needs available: bubblewrap (the local sandbox, which most tests
# use), a Docker engine and the offline sandbox image (Docker tests), zsh and fish (completion
# script checks), ripgrep (the reference of tests/test_ignore_rg.py). Debian, as root; idempotent:
# installs bubblewrap, docker.io, debootstrap, zsh, fish and ripgrep when absent, starts dockerd in
# the background when no daemon answers, builds the image once (cached by its tag). With
# RLM_NO_DOCKER=1 it stops after the packages, Docker left alone.
# Usage: scripts/provision.sh RLM_EXECUTABLE [IMAGE_TAG]
set -euo pipefail
rlm="$1"
image="${2:-rlm-sandbox:bookworm}"

no_docker="${RLM_NO_DOCKER:-}"
pairs="bwrap:bubblewrap zsh:zsh fish:fish rg:ripgrep"
[ "$no_docker" = 1 ] || pairs="$pairs dockerd:docker.io debootstrap:debootstrap"
missing=""
for pair in $pairs; do
  command -v "${pair%%:*}" >/dev/null || missing="$missing ${pair#*:}"
done
if [ -n "$missing" ]; then
  echo "provision: installing$missing"
  apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
# The local sandbox must work here (user namespaces allowed), or most tests fail with exit 5.
bwrap --unshare-all --ro-bind / / -- true || { echo "provision: bwrap cannot start a sandbox here"; exit 1; }
[ "$no_docker" = 1 ] && { echo "provision: bubblewrap $(bwrap --version | cut -d' ' -f2) ready; Docker skipped"; exit 0; }

start_dockerd() {
  nohup dockerd >>/tmp/rlm-dockerd.log 2>&1 &
  local pid=$!
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || return 1  # it exited: no point waiting
    sleep 1
  done
  return 1
}
if ! docker info >/dev/null 2>&1; then
  echo "provision: starting dockerd (log: /tmp/rlm-dockerd.log)"
  if ! start_dockerd; then
    # A daemon killed without cleaning up (e.g. the end of a session) can leave pid files behind.
    echo "provision: dockerd did not answer; clearing stale state and retrying once"
    pkill dockerd 2>/dev/null || true
    pkill containerd 2>/dev/null || true
    sleep 2
    rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
    start_dockerd || { echo "provision: dockerd did not start"; tail -20 /tmp/rlm-dockerd.log; exit 1; }
  fi
fi

if ! docker image inspect "$image" >/dev/null 2>&1; then
  echo "provision: building $image offline (debootstrap, about a minute or more)"
  "$rlm" sandbox build --tag "$image"
fi
echo "provision: Docker $(docker version --format '{{.Server.Version}}'), image $image ready"
