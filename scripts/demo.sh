#!/usr/bin/env bash
# A whole benchmark run, end to end: installs, starts Redis if needed, the provider simulator
# when no API keys are set, two Celery workers, then `producer submit --all-agents --wait`.
# Extra arguments go to `producer submit` (e.g. --limit 5, or --agent qa --backend mistral-ft).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
mkdir -p .run
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

if [ -z "${OPENAI_API_KEY:-}${ANTHROPIC_API_KEY:-}${MISTRAL_API_KEY:-}" ]; then
  port="${GENESIS_SIM_PORT:-8900}"
  url="http://127.0.0.1:$port"
  echo "No API keys set: running against the provider simulator on $url (reports say SIMULATED)."
  producer simulator --port "$port" --latency-ms "${GENESIS_SIM_LATENCY_MS:-200}" > .run/simulator.log 2>&1 &
  pids+=($!)
  export OPENAI_API_KEY=sk-sim ANTHROPIC_API_KEY=sk-ant-sim MISTRAL_API_KEY=sim
  export OPENAI_BASE_URL="$url/v1" ANTHROPIC_BASE_URL="$url" MISTRAL_BASE_URL="$url"
  for _ in $(seq 100); do curl -sf "$url/_sim/stats" >/dev/null && break; sleep 0.1; done
fi

for n in 1 2; do
  worker -n "demo$n@%h" -P threads -c "${GENESIS_WORKER_CONCURRENCY:-16}" -l INFO \
    > ".run/worker$n.log" 2>&1 &
  pids+=($!)
done
echo "Workers: 2 × threads -c ${GENESIS_WORKER_CONCURRENCY:-16} (logs in .run/). Flower: celery -A worker.app flower"
echo "Fine-tuned Mistral models per agent, and whether each models/{agent}_mistral/model_id.txt is the newest:"
producer finetune status || echo "(producer finetune status failed; the run goes on with the ids in models/)"
start=$(date +%s)
producer submit --all-agents --wait "$@"
echo "Run took $(( $(date +%s) - start )) s."
