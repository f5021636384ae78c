# Sourced by scripts/env.sh and scripts/floors (with ROOT set): point the settings at the
# shared demo weights and catalogue when they sit beside the checkout.
SHARED="${VITRINE_SHARED:-$ROOT/../shared}"
# absolute: scripts/demo runs the demo from the caller's folder, not this one
SHARED="$(cd "$SHARED" 2>/dev/null && pwd || printf '%s' "$SHARED")"
if [ -z "${VITRINE_WEIGHTS:-}" ] && [ -f "$SHARED/models/mobilenet_v2_imagenet.pth" ]; then
  export VITRINE_WEIGHTS="$SHARED/models/mobilenet_v2_imagenet.pth"
fi
if [ -z "${VITRINE_DEMO_CATALOG:-}" ] && [ -d "$SHARED/data/demo-catalog" ]; then
  export VITRINE_DEMO_CATALOG="$SHARED/data/demo-catalog"
fi
