#!/usr/bin/env bash
# Every GPU figure the project reports, in one pass that fits a short loan of a GPU machine (about 8 minutes on an
# H200): the decoder presets' tokens/s, MFU and peak memory against the estimate, eager and compiled; LoRA
# fine-tuning of a Qwen2.5-0.5B-shaped checkpoint against a plain transformers + peft loop; the trainer's overhead
# over a bare PyTorch loop; a CLI run trained, sampled and exported (the export verifies itself); the built-in bench.
# Each part runs under its own time limit, so a slow or failing part costs only itself; each writes OUT/NAME.log.
#
#     benchmarks/gpu_all.sh OUT [TEXT]     # TEXT: tiny Shakespeare for the fine-tuning benchmark
set -u
out=${1:?usage: benchmarks/gpu_all.sh OUT [TEXT]}
text=${2:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}

part() {  # part NAME SECONDS COMMAND...: one timed part, its output on screen and in OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "=== $name (at most ${limit}s)"
    local started=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local status=$?
    grep -v "it/s\]\|s/it\]" "$out/$name.log" | tail -n 40
    echo "=== $name: exit $status after $((SECONDS - started))s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$python" -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"

part train-large 210 "$python" benchmarks/gpu_train.py --device cuda --presets gpt2-124m,llama-1b,llama-350m \
    --no-overhead
part train-small 45 "$python" benchmarks/gpu_train.py --device cuda --presets small,tiny --no-overhead
if [ -n "$text" ]; then
    part finetune-0.5b 130 "$python" benchmarks/finetune_throughput.py --device cuda --shape qwen2.5-0.5b \
        --rounds 2 --steps 10 --text "$text"
fi
part overhead 45 "$python" benchmarks/train_overhead.py --device cuda --rounds 3 --iters 50 ${text:+--text "$text"}
cli_run() {  # a run as a user starts it: trained in the background process, sampled, exported and verified
    export LLM_STUDIO_HOME
    LLM_STUDIO_HOME=$(mktemp -d)
    "$python" -m studio.cli train --preset small --data python-stdlib --max-steps ${CLI_STEPS:-300} --name gpu-cli &&
        "$python" -m studio.cli generate gpu-cli --prompt "def " --max-new-tokens 64 --device cuda &&
        "$python" -m studio.cli export gpu-cli --out "$LLM_STUDIO_HOME/export"
}
export -f cli_run
export python
part cli-run 75 bash -c cli_run
part bench 50 "$python" -m studio.cli bench --json "$out/bench.json"
