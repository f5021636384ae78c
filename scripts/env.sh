# Sourced by scripts/demo and scripts/test: create .venv if needed, install Vitrine into it,
# and point the settings at the shared demo data when it sits beside the checkout.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# a relative VITRINE_SHARED is read from the caller's folder, as the paths given to scripts/demo
if [ -n "${VITRINE_SHARED:-}" ] && [ -d "$VITRINE_SHARED" ]; then
  VITRINE_SHARED="$(cd "$VITRINE_SHARED" && pwd)"
fi
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
# torch + torchvision known to work together; override for another platform or CUDA build.
TORCH_SPEC="${VITRINE_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
EXTRAS="${VITRINE_EXTRAS:-}"
# Known-good versions of the other dependencies (scripts/lock writes them); set
# VITRINE_CONSTRAINTS= (empty) to let pip pick the newest ones instead.
CONSTRAINTS="${VITRINE_CONSTRAINTS-constraints.txt}"

if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv …" >&2
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
