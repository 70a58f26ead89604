#!/usr/bin/env bash
# A pop local-process handler (see worker/src/local.rs for the contract): reads the resolved
# payload on stdin, prints progress lines, and ends with a `{"result": …}` line whose value is
# the operation's output (`@<name.out>`): {"operation", "agenda", "input": <payload>, "size"}.
#
# Knobs (environment, e.g. from the handler's `env` in the registry file):
#   POP_RECORD_DIR     when set, writes <dir>/<operation>.payload.json and appends a line to
#                      <dir>/<operation>.runs on every run (tests and the tour look at them);
#   STEP_SLEEP         seconds to sleep in the middle (a "long" operation);
#   STEP_FAIL_UNLESS   a path: fail (exit 3) unless that file exists.
set -euo pipefail

payload=$(cat)
name=${POP_OPERATION_NAME:?POP_OPERATION_NAME is not set}
agenda=${POP_AGENDA_ID:-}

if [[ -n "${POP_RECORD_DIR:-}" ]]; then
  mkdir -p "$POP_RECORD_DIR"
  printf '%s\n' "$payload" > "$POP_RECORD_DIR/$name.payload.json"
  echo run >> "$POP_RECORD_DIR/$name.runs"
fi

echo "step $name of agenda $agenda: starting"
echo '{"percent": 10, "message": "starting"}'
if [[ -n "${STEP_SLEEP:-}" ]]; then
  sleep "$STEP_SLEEP"
fi
if [[ -n "${STEP_FAIL_UNLESS:-}" && ! -e "$STEP_FAIL_UNLESS" ]]; then
  echo "step $name: $STEP_FAIL_UNLESS does not exist; failing" >&2
  exit 3
fi
echo '{"percent": 90, "message": "finishing"}'
printf '{"result": {"operation": "%s", "agenda": "%s", "input": %s, "size": %d}}\n' \
  "$name" "$agenda" "$payload" "${#payload}"
