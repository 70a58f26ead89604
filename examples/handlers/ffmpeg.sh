#!/usr/bin/env bash
# The tour's stand-in for ffmpeg, as a pop local-process handler (contract: worker/src/local.rs):
# reads the resolved payload on stdin, reports progress as {"percent", "message"} lines and
# prints its output as a final {"result": …} line. `probe` answers with stream information;
# every other operation with {"file": "out/<operation>.bin", "input": <payload>}.
# FFMPEG_TICK: seconds between progress lines (default 0.3), so `pop watch` has bars to show.
set -euo pipefail

payload=$(cat)
name=${POP_OPERATION_NAME:?POP_OPERATION_NAME is not set}
echo "ffmpeg: $name starting"
for percent in 20 40 60 80; do
  echo "{\"percent\": $percent, \"message\": \"$name $percent%\"}"
  sleep "${FFMPEG_TICK:-0.3}"
done
case "$name" in
  probe) result='{"streams": [{"codec": "h264"}, {"codec": "aac"}], "duration": 42}' ;;
  *) result="{\"file\": \"out/$name.bin\", \"input\": $payload}" ;;
esac
echo "{\"result\": $result}"
