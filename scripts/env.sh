# Sourced by scripts/demo and scripts/test: create .venv if needed, install Vitrine into it,
# and point the settings at the shared demo data when it sits beside the checkout.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# a relative VITRINE_SHARED is read from the caller's folder, as the paths given to scripts/demo
if [ -n "${VITRINE_SHARED:-}" ]; then
  if [ -d "$VITRINE_SHARED" ]; then
    VITRINE_SHARED="$(cd "$VITRINE_SHARED" && pwd)"
  else
    echo "note: VITRINE_SHARED=$VITRINE_SHARED is not a folder; the demo weights and" \
         "catalogue are not taken from it." >&2 || true  # (stderr closed: no abort)
  fi
elif [ ! -d "$ROOT/../shared" ] && { [ -z "${VITRINE_WEIGHTS:-}" ] ||
                                     [ -z "${VITRINE_DEMO_CATALOG:-}" ]; }; then
  # (a clone elsewhere learnt it only after the install, from the demo's "no catalogue")
  echo "note: no shared folder at $(dirname "$ROOT")/shared; set VITRINE_SHARED=DIR (or" \
       "VITRINE_WEIGHTS and VITRINE_DEMO_CATALOG) to use its demo weights and catalogue." \
       >&2 || true
fi
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
# torch + torchvision known to work together; override for another platform or CUDA build.
TORCH_SPEC="${VITRINE_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
EXTRAS="${VITRINE_EXTRAS:-}"
# Known-good versions of the other dependencies (scripts/lock writes them); set
# VITRINE_CONSTRAINTS= (empty) to let pip pick the newest ones instead.
CONSTRAINTS="${VITRINE_CONSTRAINTS-constraints.txt}"

# A .venv is used when it is whole and this checkout's: made here (activate names this
# folder: a checkout moved or copied with its .venv ran the other one's, or nothing), with
# pip, by a Python >= 3.11 that is still there. Else it is made again (a Ctrl+C while it
# was made, or an upgrade that removed its Python, failed every later run).
new_enough='import sys; sys.exit(sys.version_info < (3, 11))'
venv_ok() {
  local here  # (.venv's real folder: a link to a shared one names that folder)
  here="$(cd .venv 2>/dev/null && pwd -P)" && [ -f .venv/bin/activate ] \
    && ( set +u; . .venv/bin/activate >/dev/null 2>&1 && [ "$VIRTUAL_ENV" = "$here" ] ) \
    && .venv/bin/python -c "import pip; $new_enough" >/dev/null 2>&1
}
if ! venv_ok; then
  if ! "$PYTHON" -c "$new_enough" >/dev/null 2>&1; then
    echo "error: Vitrine needs Python 3.11 or newer, and $PYTHON is not (or is not found);" \
         "set PYTHON, e.g. PYTHON=python3.12 $0." >&2
    exit 1
  fi
  if [ -e .venv ]; then
    echo "Making .venv again (it was made for another folder, is unfinished, or its Python" \
         "is gone or older than 3.11) …" >&2
  else
    echo "Creating .venv …" >&2
  fi
  rm -rf .venv  # (a link: the link alone)
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
# The stamp: the extras installed (first line), then what they were installed from. Extras
# already there are kept, so scripts/demo (none) and scripts/test (dev,…) take turns
# without installing again.
stamp=".venv/.vitrine-installed"
base="$(cat pyproject.toml; echo "$TORCH_SPEC $CONSTRAINTS"; [ -z "$CONSTRAINTS" ] || cat "$CONSTRAINTS")"
have=""
need=1
if [ -f "$stamp" ] && [ "$(tail -n +2 "$stamp")" = "$base" ]; then
  have="$(head -n 1 "$stamp")"
  need=0
fi
for extra in ${EXTRAS//,/ }; do
  case ",$have," in *",$extra,"*) ;; *) need=1 ;; esac
done
if [ "$need" = 1 ]; then
  # shellcheck disable=SC2086
  all="$(printf '%s\n' ${have//,/ } ${EXTRAS//,/ } | sed '/^$/d' | sort -u | paste -sd, -)"
  echo "Installing Vitrine and its dependencies into .venv …" >&2
  python -m pip install --quiet --upgrade pip
  # shellcheck disable=SC2086
  python -m pip install --quiet $TORCH_SPEC
  # pip refuses ".[]": name extras only when there are some
  python -m pip install --quiet ${CONSTRAINTS:+-c "$CONSTRAINTS"} -e ".${all:+[$all]}"
  { printf '%s\n' "$all"; printf '%s' "$base"; } > "$stamp"
fi

# shellcheck disable=SC1091
source "$ROOT/scripts/shared.sh"
