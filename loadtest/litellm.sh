#!/usr/bin/env bash
# LiteLLM's proxy, for the `peer` scenario of weir-load.
#
#   bash loadtest/litellm.sh install                 # venv + pip install 'litellm[proxy]'
#   bash loadtest/litellm.sh run PORT PROVIDER_URL   # serve until killed
#
# The virtualenv lives in loadtest/.venv (git-ignored; override with
# LITELLM_VENV). `run` points LiteLLM's OpenAI-compatible route at
# PROVIDER_URL (the fake provider's base URL, ending in /v1) for every model
# name, with logging and callbacks off so it is measured as a plain proxy.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV=${LITELLM_VENV:-$HERE/.venv}

install() {
  [ -x "$VENV/bin/litellm" ] && return 0
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet 'litellm[proxy]'
}

run() {
  local port=$1 provider=$2
  install
  local cfg
  cfg=$(mktemp --suffix=.yaml)
  cat >"$cfg" <<YAML
model_list:
  - model_name: "*"
    litellm_params:
      model: "openai/*"
      api_base: "$provider"
      api_key: "fake"
litellm_settings:
  drop_params: true
  set_verbose: false
  json_logs: false
  turn_off_message_logging: true
general_settings:
  disable_spend_logs: true
YAML
  # LiteLLM refuses to start without a master key; weir-load sends this one.
  export LITELLM_MASTER_KEY=${LITELLM_MASTER_KEY:-sk-weir-load-0123456789abcdef}
  export LITELLM_LOG=ERROR LITELLM_TELEMETRY=False DISABLE_ADMIN_UI=True NO_DOCS=True
  exec "$VENV/bin/litellm" --config "$cfg" --host 127.0.0.1 --port "$port" --num_workers "${LITELLM_WORKERS:-1}"
}

case "${1:-}" in
  install) install ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 install | run PORT PROVIDER_URL" >&2; exit 2 ;;
esac
