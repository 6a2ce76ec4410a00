#!/usr/bin/env bash
# Install gate-edge on a Debian-like gate box from this checkout. Run ./scripts/install.sh --help.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
NAME=gate-edge
PREFIX=/opt/gate-edge
VENV=$PREFIX/.venv
ETC=/etc/gate-edge
DATA=/var/lib/gate-edge
UNIT_NAME=edge-gateway.service
UNIT=/etc/systemd/system/$UNIT_NAME
SYSUSERS=/usr/lib/sysusers.d/gate-edge.conf
TMPFILES=/usr/lib/tmpfiles.d/gate-edge.conf
EXAMPLE=config/example-rtu.yaml
ALL_EXTRAS=(camera nfc lpr)

usage() {
  cat <<EOF
Usage: scripts/install.sh [OPTIONS]

Installs gate-edge from this checkout ($SRC) on a Debian-like box:
  $VENV         virtualenv: pinned packages of requirements/base.lock (+ one lock per
                                  extra), then this project with --no-deps
  $PREFIX/               README, docs, example configs, the locks, install.env (what was installed)
  user and group $NAME         system user, no login, home $DATA (also declared in $SYSUSERS)
  $DATA/           data dir, 0750 $NAME:$NAME (also declared in $TMPFILES)
  $ETC/gateway.yaml      the config, 0640 root:$NAME; written only when none exists (from
                                  $EXAMPLE, or --config FILE), never overwritten otherwise
  $UNIT   the systemd unit; then daemon-reload, and a restart if it runs and something changed
Running it again changes nothing unless the checkout, the config's readers or the options changed.

Extras: every reader 'type: camera' in the config adds gate-edge[camera] (OpenCV, zxing-cpp, pyzbar;
Debian libzbar0), 'type: nfc' adds [nfc] (nfcpy; libusb-1.0-0), 'type: lpr' adds [lpr] (aiohttp).
The config read is --config FILE, else the installed $ETC/gateway.yaml, else the example; it is loaded
with the project's own config loader (edge.config), or scanned with PyYAML if that fails (a warning),
or, if nothing can read it, every extra is installed (a warning). Extras no longer needed are removed
from the virtualenv, so a box without a camera carries no OpenCV.

Options:
  --root DIR        install under DIR instead of / (also: DESTDIR=DIR in the environment). Nothing
                    outside DIR is touched: no useradd, no apt-get, no systemctl. Files go to
                    DIR$PREFIX, DIR$ETC, DIR$DATA, DIR$UNIT, ... with the paths inside them
                    (the unit's) still the target's. Owner and group are set only when DIR/etc/passwd
                    and DIR/etc/group name $NAME; otherwise the target's systemd creates the user from
                    the sysusers.d file and fixes the modes from the tmpfiles.d file at boot.
                    The Debian packages the target needs are listed in install.env (DEBIAN_PACKAGES).
                    A virtualenv built under DIR has DIR in its script paths: use it to check an
                    install (CI does: --root with --no-venv), build the box's own venv on the box.
  --config FILE     install FILE as $ETC/gateway.yaml (a different existing one is kept as
                    gateway.yaml.old) and pick the extras from it
  --extras LIST     the extras, comma separated (camera,nfc,lpr), or 'none': do not read the config
  --no-venv         write everything but the virtualenv (no Python packages installed; the pip
                    commands are printed and recorded in install.env). The fast check CI runs.
  --start           enable the unit and start it now (real root only)
  --uninstall       stop and disable the unit, remove it and $PREFIX; keep the config, the data
                    dir and the user
  --purge           --uninstall, and also remove $ETC, $DATA and the user and group
  -h, --help        this text

Environment: PYTHON (the interpreter of the virtualenv, default python3; >= 3.11), DESTDIR (= --root).
Examples:
  sudo ./scripts/install.sh                              # install, or upgrade from a newer checkout
  sudo ./scripts/install.sh --config site/gateway.yaml --start
  ./scripts/install.sh --root /tmp/stage --no-venv       # see what it writes, as any user
  sudo ./scripts/install.sh --uninstall                  # keeps /etc/gate-edge and /var/lib/gate-edge
EOF
}

say() { printf 'install: %s\n' "$*"; }
warn() { printf 'install: WARNING: %s\n' "$*" >&2; }
die() { printf 'install: %s\n' "$*" >&2; exit 1; }

ROOT=${DESTDIR:-}
CONFIG=""
EXTRAS_OPT=""
EXTRAS_SET=0
NO_VENV=0
START=0
UNINSTALL=0
PURGE=0
while [ $# -gt 0 ]; do
  case $1 in
    --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift ;;
    --root=*) ROOT=${1#--root=} ;;
    --config) [ $# -ge 2 ] || die "--config needs a file"; CONFIG=$2; shift ;;
    --config=*) CONFIG=${1#--config=} ;;
    --extras) [ $# -ge 2 ] || die "--extras needs a list"; EXTRAS_OPT=$2; EXTRAS_SET=1; shift ;;
    --extras=*) EXTRAS_OPT=${1#--extras=}; EXTRAS_SET=1 ;;
    --no-venv) NO_VENV=1 ;;
    --start) START=1 ;;
    --uninstall) UNINSTALL=1 ;;
    --purge) UNINSTALL=1; PURGE=1 ;;
    -h | --help) usage; exit 0 ;;
    *) printf 'install: unknown option %s (see --help)\n' "$1" >&2; exit 2 ;;
  esac
  shift
done

if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT"
  ROOT=$(cd "$ROOT" && pwd -P)
  [ "$ROOT" != / ] || ROOT=""
fi
REAL=1  # installing onto this very system
[ -z "$ROOT" ] || REAL=0
if [ "$REAL" = 1 ] && [ "$(id -u)" -ne 0 ]; then
  die "installing onto this system needs root (sudo), or stage it with --root DIR"
fi
if [ -n "$CONFIG" ]; then
  [ -f "$CONFIG" ] || die "--config $CONFIG: no such file"
  CONFIG=$(cd "$(dirname "$CONFIG")" && pwd -P)/$(basename "$CONFIG")
fi
PY=${PYTHON:-python3}
have_systemd() { [ "$REAL" = 1 ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; }

# --- ownership: this system's user database, or DIR's own /etc/passwd and /etc/group ---------------
uid_of() {
  if [ "$REAL" = 1 ]; then getent passwd "$1" | cut -d: -f3; else
    [ -f "$ROOT/etc/passwd" ] && awk -F: -v n="$1" '$1 == n { print $3 }' "$ROOT/etc/passwd"; fi
  return 0
}
gid_of() {
  if [ "$REAL" = 1 ]; then getent group "$1" | cut -d: -f3; else
    [ -f "$ROOT/etc/group" ] && awk -F: -v n="$1" '$1 == n { print $3 }' "$ROOT/etc/group"; fi
  return 0
}

CHANGED=0
# install_file SRC DEST MODE: write DEST only when its content differs (an unchanged file keeps its mtime)
install_file() {
  mkdir -p "$(dirname "$2")"
  if ! cmp -s "$1" "$2"; then
    cp "$1" "$2.tmp.$$"
    chmod "$3" "$2.tmp.$$"
    mv -f "$2.tmp.$$" "$2"
    CHANGED=1
  fi
  chmod "$3" "$2"
}
# write_text DEST MODE: install_file from stdin
write_text() {
  local tmp
  tmp=$(mktemp)
  cat > "$tmp"
  install_file "$tmp" "$1" "$2"
  rm -f "$tmp"
}

# --- uninstall ---------------------------------------------------------------------------------------
if [ "$UNINSTALL" = 1 ]; then
  if have_systemd; then
    systemctl disable --now "$UNIT_NAME" 2>/dev/null || true
  fi
  rm -f "$ROOT$UNIT" "$ROOT$SYSUSERS" "$ROOT$TMPFILES"
  rm -rf "$ROOT$PREFIX"
  if have_systemd; then systemctl daemon-reload; fi
  if [ "$PURGE" = 1 ]; then
    rm -rf "$ROOT$ETC" "$ROOT$DATA"
    if [ "$REAL" = 1 ]; then
      if getent passwd "$NAME" >/dev/null; then userdel "$NAME"; fi
      if getent group "$NAME" >/dev/null; then groupdel "$NAME"; fi
    fi
    say "purged: $ROOT$PREFIX, $ROOT$ETC, $ROOT$DATA, the unit$([ "$REAL" = 1 ] && echo ', the user and group')"
  else
    say "removed $ROOT$PREFIX and the unit; kept $ROOT$ETC and $ROOT$DATA$([ "$REAL" = 1 ] && echo " and the user $NAME") (--purge removes them)"
  fi
  exit 0
fi

# --- the user and group ------------------------------------------------------------------------------
write_text "$ROOT$SYSUSERS" 0644 <<EOF
# gate-edge: the system user the gateway runs as (written by scripts/install.sh)
u $NAME - "Community gate edge gateway" $DATA /usr/sbin/nologin
EOF
write_text "$ROOT$TMPFILES" 0644 <<EOF
# gate-edge: the data dir and the config's modes (written by scripts/install.sh)
d $DATA 0750 $NAME $NAME -
z $ETC 0750 root $NAME -
z $ETC/gateway.yaml 0640 root $NAME -
EOF
if [ "$REAL" = 1 ]; then
  if ! getent group "$NAME" >/dev/null; then groupadd --system "$NAME"; CHANGED=1; fi
  if ! getent passwd "$NAME" >/dev/null; then
    useradd --system --gid "$NAME" --home-dir "$DATA" --no-create-home --shell /usr/sbin/nologin \
      --comment "Community gate edge gateway" "$NAME"
    CHANGED=1
    say "created system user $NAME"
  fi
fi
USER_ID=$(uid_of "$NAME")
GROUP_ID=$(gid_of "$NAME")

# --- the data dir ------------------------------------------------------------------------------------
mkdir -p "$ROOT$DATA"
chmod 0750 "$ROOT$DATA"
if [ -n "$USER_ID" ] && [ -n "$GROUP_ID" ]; then chown "$USER_ID:$GROUP_ID" "$ROOT$DATA"; fi

# --- the config --------------------------------------------------------------------------------------
cfg=$ROOT$ETC/gateway.yaml
mkdir -p "$ROOT$ETC"
chmod 0750 "$ROOT$ETC"
if [ -n "$CONFIG" ]; then
  if [ -f "$cfg" ] && ! cmp -s "$CONFIG" "$cfg"; then
    cp -p "$cfg" "$cfg.old"
    say "replacing $cfg (the previous one is $cfg.old)"
  fi
  install_file "$CONFIG" "$cfg" 0640
elif [ ! -e "$cfg" ]; then
  install_file "$SRC/$EXAMPLE" "$cfg" 0640
  say "no config yet: installed the example $EXAMPLE as $cfg: edit it for this gate"
fi
chmod 0640 "$cfg"
if [ -n "$GROUP_ID" ]; then chown "0:$GROUP_ID" "$ROOT$ETC" "$cfg"; fi

# --- the code, docs and locks ------------------------------------------------------------------------
# sync_tree SRCDIR DESTDIR: DESTDIR holds the files of SRCDIR (no __pycache__), nothing else
sync_tree() {
  local f rel
  mkdir -p "$2"
  while IFS= read -r -d '' f; do
    rel=${f#"$1"/}
    if ! cmp -s "$f" "$2/$rel"; then
      mkdir -p "$(dirname "$2/$rel")"
      cp "$f" "$2/$rel.tmp.$$"
      mv -f "$2/$rel.tmp.$$" "$2/$rel"
      CHANGED=1
    fi
  done < <(find "$1" -name __pycache__ -prune -o -type f ! -name '*.pyc' -print0)
  find "$2" -type f ! -perm 0644 -exec chmod 0644 {} +
  find "$2" -type d ! -perm 0755 -exec chmod 0755 {} +
  while IFS= read -r -d '' f; do
    rel=${f#"$2"/}
    if [ ! -f "$1/$rel" ]; then rm -f "$f"; CHANGED=1; fi
  done < <(find "$2" -type f -print0)
  find "$2" -mindepth 1 -type d -empty -delete
}
install_file "$SRC/README.md" "$ROOT$PREFIX/README.md" 0644
sync_tree "$SRC/docs" "$ROOT$PREFIX/docs"
sync_tree "$SRC/config" "$ROOT$PREFIX/examples"
sync_tree "$SRC/requirements" "$ROOT$PREFIX/requirements"
# the source the venv's package is built from (the project, non-editable)
install_file "$SRC/pyproject.toml" "$ROOT$PREFIX/src/pyproject.toml" 0644
install_file "$SRC/README.md" "$ROOT$PREFIX/src/README.md" 0644
sync_tree "$SRC/edge" "$ROOT$PREFIX/src/edge"
sync_tree "$SRC/drivers" "$ROOT$PREFIX/src/drivers"
install_file "$SRC/systemd/$UNIT_NAME" "$ROOT$UNIT" 0644

# --- which extras -----------------------------------------------------------------------------------
# reader types of a config, one a line: exactly, with the checkout's own loader (edge.config) ...
READER_TYPES_EXACT='import sys
from edge.config import load_config
print("\n".join(sorted({m.type for m in load_config(sys.argv[1]).reader_models().values()})))'
# ... or approximately, with PyYAML alone (a config the loader refuses, or no pydantic at hand)
READER_TYPES_YAML='import sys, yaml
doc = yaml.safe_load(open(sys.argv[1], encoding="utf-8")) or {}
readers = doc.get("readers") or {}
print("\n".join(sorted({str(r.get("type")) for r in readers.values() if isinstance(r, dict)})))'

EXTRAS_FROM=""
# reader_types PYTHON CONFIG: prints how it read them (edge.config or yaml), then the types, one a line;
# fails when neither way can read the file
reader_types() {
  local py=$1 file=$2 out err errf
  errf=$(mktemp)
  if out=$(PYTHONPATH=$SRC "$py" -c "$READER_TYPES_EXACT" "$file" 2>"$errf"); then
    rm -f "$errf"
    printf 'edge.config\n%s\n' "$out"
    return 0
  fi
  err=$(cat "$errf")
  rm -f "$errf"
  if out=$("$py" -c "$READER_TYPES_YAML" "$file" 2>/dev/null); then
    warn "the config loader refused $file (the gateway will not start with it):"
    printf '%s\n' "$err" | tail -n 5 | sed 's/^/    /' >&2
    warn "picked the extras from its YAML instead"
    printf 'yaml\n%s\n' "$out"
    return 0
  fi
  return 1
}

pick_extras() {  # pick_extras PYTHON: sets EXTRAS (space separated)
  local py=$1 file types t e
  EXTRAS=""
  if [ "$EXTRAS_SET" = 1 ]; then
    for e in ${EXTRAS_OPT//,/ }; do
      case $e in
        none) ;;
        camera | nfc | lpr) EXTRAS="$EXTRAS $e" ;;
        *) die "--extras: unknown extra '$e' (camera, nfc, lpr, none)" ;;
      esac
    done
    EXTRAS_FROM="--extras $EXTRAS_OPT"
  else
    file=$cfg  # --config FILE was installed there just above
    if types=$(reader_types "$py" "$file"); then
      case ${types%%$'\n'*} in
        edge.config) EXTRAS_FROM="${file#"$ROOT"}, read by edge.config" ;;
        *) EXTRAS_FROM="${file#"$ROOT"}, YAML only: the config loader refused it" ;;
      esac
      for t in ${types#*$'\n'}; do
        case $t in camera | nfc | lpr) EXTRAS="$EXTRAS $t" ;; esac
      done
    else
      warn "cannot read the reader types of $file with $py: installing every extra"
      EXTRAS="${ALL_EXTRAS[*]}"
      EXTRAS_FROM="every extra: ${file#"$ROOT"} unreadable"
    fi
  fi
  # canonical order, no duplicates
  local sorted=""
  for e in "${ALL_EXTRAS[@]}"; do
    case " $EXTRAS " in *" $e "*) sorted="$sorted $e" ;; esac
  done
  EXTRAS=${sorted# }
}

debian_packages() {  # the Debian packages the chosen extras need
  local e pkgs="python3 python3-venv"
  for e in $EXTRAS; do
    case $e in camera) pkgs="$pkgs libzbar0" ;; nfc) pkgs="$pkgs libusb-1.0-0" ;; esac
  done
  printf '%s\n' "$pkgs"
}

apt_install_missing() {
  local p missing=()
  command -v dpkg-query >/dev/null 2>&1 || { warn "not a Debian system: make sure these are installed: $*"; return 0; }
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# the lock files of the chosen extras, build and base first: sets LOCKS (an array)
set_locks() {
  local e
  LOCKS=(build base)
  for e in $EXTRAS; do LOCKS+=("$e"); done
}
lock_args() {  # lock_args DIR LOCK...: pip's -r arguments, one word a line
  local l d=$1
  shift
  for l in "$@"; do printf -- '-r\n%s\n' "$d/$l.lock"; done
}
normalize() { sed 's/[_.]/-/g' | tr '[:upper:]' '[:lower:]' | sort -u; }
lock_names() {  # package names in lock files
  local l
  for l in "$@"; do
    sed -n 's/^\([A-Za-z0-9][A-Za-z0-9._-]*\)==.*/\1/p' "$SRC/requirements/$l.lock"
  done | normalize
}

SOURCE_SHA=$(cd "$SRC" && find edge drivers -name '*.py' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum \
  | cat - pyproject.toml | sha256sum | cut -d' ' -f1)
VERSION=$("$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
  "$SRC/pyproject.toml" 2>/dev/null || echo unknown)
manifest=$ROOT$PREFIX/install.env
prev() { if [ -f "$manifest" ]; then sed -n "s/^$1=//p" "$manifest"; fi; }

# --- the virtualenv ----------------------------------------------------------------------------------
venv=$ROOT$VENV
PIP_CMD=""
if [ "$NO_VENV" = 1 ]; then
  pick_extras "$PY"
  set_locks
  PIP_CMD="$VENV/bin/python -m pip install --require-hashes $(lock_args "$PREFIX/requirements" "${LOCKS[@]}" | tr '\n' ' ')&& $VENV/bin/python -m pip install --no-deps --no-build-isolation $PREFIX/src"
  say "--no-venv: not installing Python packages; the virtualenv would get: $PIP_CMD"
else
  "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || die "Python >= 3.11 is required ($PY is $("$PY" --version 2>&1))"
  if [ "$REAL" = 1 ] && ! "$PY" -c 'import ensurepip' 2>/dev/null; then apt_install_missing python3-venv; fi
  if [ ! -x "$venv/bin/python" ]; then
    say "creating the virtualenv $venv"
    "$PY" -m venv "$venv"
    CHANGED=1
  fi
  vpy=$venv/bin/python
  pip_q=(-m pip install -q --disable-pip-version-check --require-hashes)
  # the core first: its pydantic and PyYAML read the config to pick the extras
  mapfile -t args < <(lock_args "$ROOT$PREFIX/requirements" build base)
  "$vpy" "${pip_q[@]}" "${args[@]}"
  pick_extras "$vpy"
  set_locks
  if [ "$REAL" = 1 ]; then
    # shellcheck disable=SC2046
    apt_install_missing $(debian_packages)
  fi
  mapfile -t args < <(lock_args "$ROOT$PREFIX/requirements" "${LOCKS[@]}")
  "$vpy" "${pip_q[@]}" "${args[@]}"
  # packages of extras no longer chosen (a camera removed from the config) leave the venv
  dropped=()
  for e in "${ALL_EXTRAS[@]}"; do
    case " $EXTRAS " in *" $e "*) ;; *) dropped+=("$e") ;; esac
  done
  if [ ${#dropped[@]} -gt 0 ]; then
    remove=$(comm -23 <(lock_names "${dropped[@]}") <(lock_names "${LOCKS[@]}"))
    installed=$("$vpy" -m pip list --format=freeze --disable-pip-version-check 2>/dev/null \
      | sed 's/==.*//' | normalize)
    stale=$(comm -12 <(printf '%s\n' "$remove") <(printf '%s\n' "$installed"))
    if [ -n "$stale" ]; then
      say "removing what extras no longer chosen brought: ${stale//$'\n'/ }"
      # shellcheck disable=SC2086
      "$vpy" -m pip uninstall -q -y $stale
      CHANGED=1
    fi
  fi
  # the project itself, with no dependency outside the locks and the locked build backend
  if [ "$(prev SOURCE_SHA256)" != "$SOURCE_SHA" ] || ! "$vpy" -c 'import edge.cli' 2>/dev/null; then
    build=$(mktemp -d)  # a copy: setuptools writes build/ and *.egg-info next to the sources
    cp -r "$ROOT$PREFIX/src/." "$build/"
    "$vpy" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation --force-reinstall "$build"
    rm -rf "$build"
    CHANGED=1
  fi
  # every chosen extra must import (a missing libzbar0 shows here, not at the first car)
  for e in $EXTRAS; do
    case $e in
      camera) mods="cv2 zxingcpp pyzbar.pyzbar" ;;
      nfc) mods="nfc" ;;
      lpr) mods="aiohttp" ;;
    esac
    for m in $mods; do
      "$vpy" -c "import $m" || die "extra $e: python module $m does not import in $venv"
    done
  done
fi

# --- what was installed ------------------------------------------------------------------------------
write_text "$manifest" 0644 <<EOF
# written by scripts/install.sh: what is installed here (read again by the next run)
VERSION=$VERSION
SOURCE_SHA256=$SOURCE_SHA
EXTRAS=${EXTRAS// /,}
EXTRAS_FROM=$EXTRAS_FROM
LOCKS=${LOCKS[*]}
VENV=$([ "$NO_VENV" = 1 ] && echo "not built (--no-venv): $PIP_CMD" || echo "$VENV")
DEBIAN_PACKAGES=$(debian_packages)
EOF

say "extras: ${EXTRAS:-none} (from $EXTRAS_FROM)"
if [ "$REAL" = 1 ]; then
  if have_systemd; then
    systemctl daemon-reload
    if [ "$START" = 1 ]; then
      systemctl enable --now "$UNIT_NAME"
      [ "$CHANGED" = 0 ] || systemctl try-restart "$UNIT_NAME"
    elif [ "$CHANGED" = 1 ] && systemctl is-active --quiet "$UNIT_NAME"; then
      say "restarting $UNIT_NAME (something changed)"
      systemctl restart "$UNIT_NAME"
    fi
  else
    warn "systemd is not running here: start it with $VENV/bin/edge run -c $ETC/gateway.yaml"
  fi
  if [ "$NO_VENV" = 0 ] && ! "$VENV/bin/edge" check-config "$ETC/gateway.yaml" >/dev/null 2>&1; then
    warn "$ETC/gateway.yaml does not pass 'edge check-config' yet: the unit will refuse to start"
  fi
  [ "$START" = 1 ] || say "next: edit $ETC/gateway.yaml, then: systemctl enable --now $UNIT_NAME"
fi
say "done$([ "$CHANGED" = 0 ] && echo ' (nothing changed)')"
