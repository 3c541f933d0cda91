# Sourced by the soak scripts (kill-soak.sh, lock-check.sh), run from the repository root.
# soak_setup NAME: checks that build/release and the sqlite3 command are there, sets GANPO (the
# built `ganpo`) and WORK (a fresh folder /tmp/ganpo-NAME.XXXXXX), and keeps the default
# workspace of the runs inside WORK.
soak_setup() {
  GANPO=$PWD/build/release/app/ganpo
  [[ -x $GANPO ]] || { echo "build first: cmake --preset release && cmake --build --preset release" >&2; exit 2; }
  command -v sqlite3 >/dev/null || { echo "needs the sqlite3 command (apt-get install sqlite3)" >&2; exit 2; }
  WORK=$(mktemp -d "/tmp/ganpo-$1.XXXXXX")
  export XDG_DATA_HOME=$WORK/xdg
}

# tiny_run_config NAME FILE OUTPUT_DIR STEPS SAVE_STEPS writes a DPO + GANPO run of the tiny model
# on the built-in lists task to FILE, one thread, a metric every step, seed 11 (so two runs of it
# give the same weights).
tiny_run_config() {
  cat >"$2" <<TOML
name = "$1"
stage = "preference"
seed = 11
output_dir = "$3"
[model]
preset = "tiny"
[data]
builtin = "lists"
builtin_train_size = 400
builtin_eval_size = 16
[ganpo]
critic_hidden = 32
critic_layers = 1
critic_heads = 2
critic_max_len = 256
[train]
max_steps = $4
per_device_train_batch_size = 4
logging_steps = 1
save_steps = $5
num_threads = 1
[sampling]
every_steps = 50
num_prompts = 2
max_new_tokens = 8
[eval]
num_prompts = 6
temperatures = "1.0"
TOML
}
