#!/usr/bin/env bash
# Installs the system tools some tests use (thrift compiler, haproxy) where apt-get is available.
# Tests that need a missing tool skip and say why, so a failure here is reported, not fatal.
set -u
missing=()
command -v thrift >/dev/null 2>&1 || missing+=(thrift-compiler)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} (apt-get)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
    >/dev/null 2>&1 || echo "could not install ${missing[*]}; tests that need them will skip"
else
  echo "not installing ${missing[*]} (needs root and apt-get); tests that need them will skip"
fi
exit 0
