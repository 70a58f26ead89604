#!/usr/bin/env bash
# A pop generator handler: reads {"parts": N, …} on stdin and outputs N operations `part-1` …
# `part-N` of type `step` plus a `join` operation that collects their outputs. Used with
#   params: {"agenda.operation.generator": {"operationsJsonPointer": "/operations",
#                                           "paramsJsonPointer": "/params"}}
# the worker adds them to the agenda (the server validates them) and runs them at once.
# POP_RECORD_DIR: as in step.sh.
set -euo pipefail

payload=$(cat)
name=${POP_OPERATION_NAME:?POP_OPERATION_NAME is not set}
if [[ -n "${POP_RECORD_DIR:-}" ]]; then
  mkdir -p "$POP_RECORD_DIR"
  printf '%s\n' "$payload" > "$POP_RECORD_DIR/$name.payload.json"
  echo run >> "$POP_RECORD_DIR/$name.runs"
fi

parts=$(grep -o '"parts": *[0-9][0-9]*' <<<"$payload" | head -n 1 | grep -o '[0-9][0-9]*$' || true)
parts=${parts:-2}
echo "fanout $name: generating $parts parts"

ops=""
deps=""
refs=""
for i in $(seq 1 "$parts"); do
  ops+="{\"name\": \"part-$i\", \"type\": \"step\", \"payload\": {\"part\": $i, \"of\": \"@<$name.out::/parts>\"}}, "
  deps+="part-$i,"
  refs+="\"@<part-$i.out::/input/part>\", "
done
ops+="{\"name\": \"join\", \"type\": \"step\", \"payload\": {\"parts\": [${refs%, }]}, \"params\": {\"dependsOn\": \"${deps%,}\"}}"
printf '{"result": {"parts": %d, "operations": [%s], "params": {"generatedParts": %d}}}\n' \
  "$parts" "$ops" "$parts"
