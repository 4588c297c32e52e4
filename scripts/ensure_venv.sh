#!/usr/bin/env bash
# Makes .venv hold the project with the extras named in $1 (default dev,bench), and says what it
# does and why before doing anything. The stamp .venv/.installed records the SHA-256 of the
# pyproject.toml it was installed from and the extras, so a fresh clone (new file times) beside a
# .venv installed from the same pyproject.toml does nothing, where a time-based make rule would
# reinstall; an older or foreign .venv is updated in place, saying so, never silently.
# Usage: scripts/ensure_venv.sh [EXTRAS]   (PYTHON=python3 and VENV=.venv may be set)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${1:-dev,bench}
STAMP="$VENV/.installed"
digest=$(sha256sum pyproject.toml | cut -d' ' -f1)

installed_digest="" installed_extras=""
if [ -f "$STAMP" ]; then
  read -r installed_digest installed_extras <"$STAMP" || true
fi
covered=yes
for extra in ${EXTRAS//,/ }; do
  case ",$installed_extras," in *",$extra,"*) ;; *) covered=no ;; esac
done
if [ "$installed_digest" = "$digest" ] && [ "$covered" = yes ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "make: no $VENV here: creating it and installing the project with [$EXTRAS]"
  echo "      (about 6 GB, mostly torch and its CUDA libraries; a few minutes)"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
elif [ ! -f "$STAMP" ]; then
  echo "make: $VENV exists but no $STAMP says what it holds: installing the project with"
  echo "      [$EXTRAS] into it (pip keeps what already satisfies pyproject.toml)"
elif [ -z "$installed_extras" ]; then
  echo "make: $VENV was installed by an older Makefile (its stamp records no pyproject.toml):"
  echo "      installing the project with [$EXTRAS] into it (pip keeps what already satisfies"
  echo "      pyproject.toml, so torch is not fetched again unless its version no longer fits)"
elif [ "$installed_digest" != "$digest" ]; then
  echo "make: pyproject.toml changed since $VENV was installed: updating it with [$EXTRAS]"
  echo "      (pip keeps what already satisfies the new pyproject.toml)"
else
  echo "make: $VENV has [$installed_extras], not [$EXTRAS]: adding the missing extras"
fi
echo "      (delete $VENV, or run 'make clean', to start from nothing)"
"$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
# Keep the extras already installed: a later `make demo` must not drop what `make peers` added.
all_extras=$(printf '%s\n' ${EXTRAS//,/ } ${installed_extras//,/ } | sort -u | paste -sd, -)
[ "$installed_digest" = "$digest" ] || all_extras=$EXTRAS
echo "$digest $all_extras" >"$STAMP"
