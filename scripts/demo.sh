#!/usr/bin/env bash
# The whole path on one CPU machine: train -> export -> detect -> inspect the database.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
RUN=${RUN:-runs/demo}
# A fixed number of epochs, not a time budget: the same model, and the same detections,
# however loaded the machine is (14 epochs of the tiny benchmark are about 520 steps,
# 5 min on 2 idle cores). MINUTES=N adds a wall-clock cap, which trades that away.
EPOCHS=${EPOCHS:-14}
BUDGET=(--epochs "$EPOCHS")
[ -n "${MINUTES:-}" ] && BUDGET+=(--minutes "$MINUTES")
AUDIO=${AUDIO:-../shared/realaudio}

echo "== 1/3 train a small CLAP on the tiny procedural benchmark (${BUDGET[*]})"
animalclap-train train --data tiny --out "$RUN" --overwrite "${BUDGET[@]}"

echo "== 2/3 export: text embeddings, ONNX audio encoder with the front-end inside, trait heads"
PARITY=()
[ -d "$AUDIO" ] && PARITY=(--parity-audio "$AUDIO")
animalclap-export bundle --checkpoint "$RUN/checkpoint" --data tiny --out "$RUN/bundle" \
  --name demo-run --demo --notice "trained for minutes on generated audio: not a field model" \
  "${PARITY[@]}" --overwrite

echo "== 3/3 detect on real recordings with the new bundle"
if [ -d "$AUDIO" ]; then
  animalclap-edge run --bundle "$RUN/bundle" --source "$AUDIO" --db "$RUN/detections.db" | tail -n 20
  python - "$RUN/detections.db" <<'PY'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
print("recordings by status:", dict(con.execute("select status, count(*) from recordings group by status")))
# The database outlives a rerun (new bundle, same file): count this run's rows apart.
last = "(select run_id from runs order by started_utc desc limit 1)"
mine = con.execute(f"select count(*) from detections where run_id = {last}").fetchone()[0]
runs, total = con.execute("select (select count(*) from runs), count(*) from detections").fetchone()
print(f"detections: {mine}" + (f" (the database holds {total} from {runs} runs)" if runs > 1 else ""))
PY
else
  echo "no $AUDIO folder: run 'animalclap-edge run --bundle $RUN/bundle --source YOUR_AUDIO'"
fi
