// The run configuration: one RunConfig value describing a whole training run.
//
// Loaded from and saved to TOML (or JSON), overridable with "section.key=value" strings from
// the command line, and validated in one place with messages a person can act on
// ("objective.beta must be > 0, got -1"). Key names follow TRL's DPOConfig where TRL has one.
// Sections: top level (name, stage, seed, device, output_dir), [model], [data], [objective],
// [ganpo], [train], [sampling], [eval], and [[pipeline]] stages trained first. No torch types here: the GUI and the run store use it too.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace ganpo {

// Low-rank adapters (PEFT's LoRA): the pretrained weights stay frozen and each targeted linear
// layer learns W + (alpha / r) * B A (alpha / sqrt(r) with use_rslora), with A [r, in] and B
// [out, r] (B starts at zero). The reference of a preference stage is then the same model with
// its adapters switched off.
constexpr int64_t kMaxLoraRank = 65536;  // a rank (and an alpha) beyond any model's width

struct LoraConfig {
  int64_t r = 0;        // rank; 0 = full fine-tuning (no adapters)
  double alpha = 16.0;  // PEFT's lora_alpha: the update is scaled by alpha / r
  bool use_rslora = false;  // PEFT's use_rslora: scaled by alpha / sqrt(r) instead (rank-stabilised)
  // PEFT's use_dora (DoRA): each adapted weight is m * (W + s B A) / ||W + s B A|| row by row,
  // with a trained magnitude m per output (starting at ||W||), the norm held constant in the
  // backward pass as PEFT and the DoRA paper (section 4.3) do.
  bool use_dora = false;
  double dropout = 0.0; // on the adapter's input, while training
  // Comma-separated projections to adapt (HF Llama names: q_proj, k_proj, v_proj, o_proj,
  // gate_proj, up_proj, down_proj, or the family's own as PEFT takes them: GPT-2's c_attn, ...),
  // "all-linear", or PEFT's regular expression over whole module names
  // (".*\.layers\.1\..*(q|v)_proj"; core/model/lora_targets.h).
  std::string target_modules = "q_proj,k_proj,v_proj,o_proj";
  // PEFT's settings that narrow or vary the adapters (core/model/lora_targets.h), as lists:
  // layers_to_transform: the layers the projections above are adapted in ("0,1,2" or ranges
  // "20-31"; empty = every layer); exclude_modules: module names not to adapt
  // ("model.layers.0.self_attn.q_proj", "down_proj", or a regular expression); rank_pattern / alpha_pattern: another rank
  // or alpha for the modules a pattern matches the end of ("self_attn.q_proj=16"; Python
  // regular expressions, the first that matches wins; a pattern cannot hold a comma).
  std::string layers_to_transform;
  std::string exclude_modules;
  std::string rank_pattern;
  std::string alpha_pattern;
  // PEFT's modules_to_save: whole modules trained besides the adapters, each as a copy (the
  // reference keeps the original): "lm_head, embed_tokens", "norm" (every module whose name
  // ends with it), "model.layers.0.mlp" (core/model/modules_to_save.h). ensure_weight_tying:
  // where the head is tied to the embedding, picking either trains one copy that stays both
  // (false: PEFT's default, they are untied).
  std::string modules_to_save;
  // PEFT's trainable_token_indices (its list form): token ids whose embedding rows train, e.g.
  // the chat template's new tokens ("128000-128010, 5"); a tied head follows them.
  std::string trainable_token_indices;
  bool ensure_weight_tying = false;
  // PEFT's bias: "none"; "all" trains every bias of the model (GPT-2's projections and
  // LayerNorms, Qwen2's q, k and v); "lora_only" the biases of the adapted modules. Each trains
  // as a copy beside the original, which the adapters-off reference keeps (PEFT's reference with
  // its adapters disabled would use the trained biases; DPO's is the model before training).
  std::string bias = "none";
  // PEFT's init_lora_weights: "default" (A Kaiming-uniform, B zero), "gaussian" (A normal with
  // std 1 / r), "pissa" (A and B the top-r singular part of each adapted weight, PiSSA) or "olora"
  // (its first r QR factors, OLoRA). PiSSA and OLoRA start the adapters away from zero and
  // subtract their first values, so the run starts at the base model and the reference (the
  // adapters off) is the base model; their adapter folder is PEFT's conversion to plain LoRA of
  // rank 2r. Projections only (not the embedding or the head), and not with DoRA.
  std::string init_lora_weights = "default";
};

struct ModelConfig {
  std::string preset = "tiny";  // "tiny" | "small" | "base" | "" (explicit shape below)
  std::string arch;             // "llama" | "gpt2"; empty = the preset's
  int64_t d_model = 0;          // 0 = the preset's value
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;       // grouped-query attention; 0 = n_heads
  int64_t d_ff = 0;             // 0 = derived from d_model and arch
  int64_t max_seq_len = 0;      // positions the model supports; 0 = the preset's
  double rope_theta = 10000.0;
  // Start from this folder: a Hugging Face model folder (config.json + safetensors, any family
  // in core/model/architectures.h) or one of our checkpoints. Empty = fresh init of the preset.
  std::string checkpoint;
  // true: build model.checkpoint's architecture from its config.json with fresh random weights
  // (transformers' from_config), for training from scratch or measuring a real model's size
  // without its weights; the folder's tokenizer when it has one, else the byte tokenizer.
  // Presets always start from random weights.
  bool random_weights = false;
  std::string reference;        // reference model folder (empty = the starting weights)
  std::string save_dtype;       // checkpoints' weights: "" (as loaded) | "float32" | "bfloat16" | "float16"
  int64_t max_shard_mb = 5000;  // checkpoints shard their weights above this size (transformers' 5GB)
  LoraConfig lora;              // [model.lora]
};

struct DataConfig {
  // "auto": the file in data.train when one is named, else the built-in "lists" task; a built-in
  // task's name ("lists", "arithmetic", "mixed": core/tasks/task.h; data.train / data.eval must
  // then be empty); "": the files below.
  std::string builtin = "auto";
  std::string train;              // JSONL/JSON file in TRL format
  std::string eval;               // optional held-out file; else split from train
  double eval_fraction = 0.05;
  int64_t max_length = 200;       // prompt + response tokens
  int64_t max_prompt_length = 100;
  double label_noise = 0.0;       // fraction of training pairs with chosen/rejected swapped
  std::string on_bad_line = "error";  // "error" | "skip"
  // Conversational rows: "" = the template in the model's tokenizer_config.json, recognised as
  // one of core/text/chat_template.h's families; or a family / variant name ("llama3", "chatml").
  std::string chat_template;
  int64_t builtin_train_size = 4000;  // built-in task: examples generated for training
  int64_t builtin_eval_size = 200;    // built-in task: held-out examples
};

struct ObjectiveConfig {
  std::string loss_type = "sigmoid";  // "sigmoid" (DPO) | "simpo" | "ipo" | "hinge"
  double beta = 0.0;                  // 0 = default for the loss (0.1; SimPO 2.5)
  double simpo_gamma = 1.4;
  double rpo_alpha = 0.0;  // TRL's rpo_alpha: weight of an NLL term on the chosen responses; 0 = off
};

struct GanpoConfig {
  bool enabled = true;
  double adv_weight = 1.0;          // lambda
  int64_t critic_hidden = 512;
  int64_t critic_layers = 2;
  int64_t critic_heads = 8;
  int64_t critic_ffn_mult = 4;
  int64_t critic_max_len = 2048;
  double critic_dropout = 0.1;
  double critic_lr_ratio = 0.5;
  double ema_momentum = 0.9;
  std::string critic_mask = "attention";  // "none" | "attention" | "response"
  int64_t critic_update_every = 1;        // optimizer steps between critic steps
};

struct TrainConfig {
  double learning_rate = 1e-6;
  std::string lr_scheduler_type = "linear";  // "constant" | "linear" | "cosine"
  double warmup_ratio = 0.0;
  int64_t per_device_train_batch_size = 8;
  // Pairs (SFT: rows) per batch of the passes without gradients: held-out evaluations and
  // precomputed reference log-probs (TRL's per_device_eval_batch_size). 0 = the training batch,
  // at least 8.
  int64_t per_device_eval_batch_size = 0;
  int64_t gradient_accumulation_steps = 1;
  // transformers' auto_find_batch_size, keeping the rows per optimizer step: where an optimizer
  // step runs out of memory, the stage goes on with half the micro-batch and twice the
  // accumulation (per_device_train_batch_size x gradient_accumulation_steps unchanged) from its
  // newest checkpoint, or from the start; where a held-out evaluation or the precompute does, with
  // half the evaluation batch (a checkpoint of the step is written first, so nothing is lost).
  // Until a batch of 1 fails too. One process only (each rank of a data-parallel run would have
  // to find it together); checkpoints remember what was found, and a resume starts from it.
  bool auto_find_batch_size = false;
  int64_t max_steps = -1;                    // > 0 overrides num_train_epochs
  double num_train_epochs = 1.0;
  double max_grad_norm = 1.0;
  double weight_decay = 0.0;  // AdamW's, on every trained tensor but biases and norm weights (as transformers' Trainer)
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  std::string precision = "fp32";  // "fp32" | "bf16" (bf16 autocast of training, evaluation and precompute passes,
                                   // a reference of its own with its projections stored in bf16; LibTorch 2.x + CUDA)
  // Keep only each block's input in the forward pass and recompute the block in the backward
  // pass: activation memory drops from ~17 d to ~d values per token and layer, for about one
  // more forward pass of compute (transformers' gradient_checkpointing).
  bool gradient_checkpointing = false;
  // Deterministic kernels only (PyTorch's use_deterministic_algorithms, deterministic cuDNN
  // without autotuning, CUBLAS_WORKSPACE_CONFIG=:4096:8): on CUDA, what makes a resumed run
  // bitwise equal to an uninterrupted one. CPU runs are bitwise reproducible without it.
  bool deterministic = false;
  // TRL's precompute_ref_log_probs: the reference scores every training and held-out pair once
  // before the first step; steps and evaluations read those numbers. With GANPO on the
  // reference still runs each step for its hidden states, without its output head.
  bool precompute_ref_log_probs = false;
  // Preference stages: each pair's prompt runs through policy and reference once, its keys and
  // values shared by both responses (prefix sharing), instead of once per response. The same
  // numbers up to rounding for less work: a pair costs P + 2R token positions, not 2 (P + R).
  // Falls back per batch where it cannot apply (critic_mask "none", an empty prompt, a batch
  // whose longest prompt plus longest response exceeds the model's positions); the policy keeps
  // the plain pass under gradient checkpointing. Held-out evaluations share the same way.
  bool prefix_sharing = true;
  // transformers' group_by_length: each epoch's shuffled order is cut into mega-batches of up to
  // 50 optimizer steps' rows, each sorted longest first, so a batch's rows have similar lengths
  // and little padding; the epoch's longest row comes first (memory trouble shows early). The
  // order follows from seed and epoch; a resumed run finishes its epoch in the checkpoint's
  // order (even with another batch) and groups the next for its own batch. Off: plain shuffling.
  bool group_by_length = false;
  // Response log-probs without the [tokens, vocabulary] logits (core/chunked_logps.h): the
  // output head and log-softmax run over chunks of positions and the backward pass recomputes
  // each chunk, so the head's memory no longer grows with batch x length x vocabulary, for one
  // more head product per position. "auto": on where the vocabulary exceeds 100k entries (Llama 3,
  // Gemma 2, Qwen), whose logits are a large share of a step's memory. "on" | "off" | "auto".
  std::string chunked_logps = "auto";
  int64_t logging_steps = 10;
  int64_t eval_steps = 0;          // 0 = only at the end
  int64_t save_steps = 0;          // 0 = only at the end
  int64_t num_threads = 0;         // CPU cores a CPU run uses; 0 = all this process may use,
                                   // split evenly with other ganpo jobs computing on the machine
  // Data parallelism (core/data_parallel.h): processes on this machine, each with
  // per_device_train_batch_size rows of every global batch; a CUDA run uses one GPU per process.
  // `ganpo launch` (or torchrun / srun environments) spreads a run over several hosts instead.
  int64_t num_processes = 1;
  // How long a collective waits for the other processes before the run fails (a hung rank).
  double dist_timeout_s = 1800;
};

struct SamplingConfig {
  int64_t every_steps = 0;  // 0 = only at the start and end
  int64_t num_prompts = 8;
  double temperature = 0.7;
  double top_p = 1.0;
  int64_t top_k = 0;
  int64_t max_new_tokens = 64;
};

// The evaluation a preference stage ends with, beyond the held-out pairs: policy and reference
// sampled on the task's evaluation prompts at several temperatures, every completion judged.
struct EvalConfig {
  bool judge_at_end = true;      // when the task has a judge (built-in, or eval.judge_command)
  std::string temperatures = "0.5, 0.7, 1.0, 1.3, 1.5";  // comma-separated
  int64_t num_prompts = 60;      // built-in tasks: prompts generated; data files: held-out prompts used
  int64_t max_new_tokens = 0;    // 0 = sampling.max_new_tokens
  int64_t seed = 1234;           // prompts and sampling; equal across runs, so runs compare prompt by prompt
  // A command that scores completions (JSON Lines, core/eval/external_judge.h): the judge of a
  // data file, or instead of a built-in task's own judge. Run as an argument list, never
  // through a shell (core/command_line.h); write sh -c '...' to use one.
  std::string judge_command;
  double judge_timeout_s = 600;
};

// A stage trained before the run, in the same workspace: the run's config with `assignments`
// ("section.key=value") applied. Stages chain: each starts from (and uses as reference) the
// previous one's final/, and the run itself from the last one's. TOML:
//   [[pipeline]]
//   name = "sft"
//   set = { stage = "sft", "train.max_steps" = 520 }
struct PipelineStage {
  std::string name;
  std::vector<std::string> assignments;
};

struct RunConfig {
  std::string name = "run";
  std::string stage = "preference";  // "sft" | "preference"
  int64_t seed = 42;
  std::string device = "auto";       // "auto" | "cpu" | "cuda" | "cuda:N"
  std::string output_dir = "runs/run";
  ModelConfig model;
  DataConfig data;
  ObjectiveConfig objective;
  GanpoConfig ganpo;
  TrainConfig train;
  SamplingConfig sampling;
  EvalConfig eval;
  // Stages trained first (e.g. SFT before the preference stage). A config with a pipeline is
  // run as a study of one arm (core/study_spec.h): one run per stage, then this one.
  std::vector<PipelineStage> pipeline;
};

// The adapters' dropout a stage applies: model.lora.dropout in an SFT stage; none in a preference
// stage, whose policy runs without dropout (GANPO.md section 3, as TRL's DPOTrainer zeroes every
// dropout by default with disable_dropout, PEFT's lora_dropout included).
double applied_lora_dropout(const RunConfig& config);

// Loading and saving. Unknown keys and wrongly typed values throw ConfigError naming the key.
RunConfig load_config_file(const std::string& path);  // .toml or .json by extension
// Whether a config file sets no value at all (empty, only comments or whitespace, "{}", or
// only empty tables such as "[model]").
bool config_file_sets_nothing(const std::string& path);
RunConfig config_from_toml(const std::string& toml_text);
// table_prefix nests every table under it ("base" writes [base], [base.model], ...,
// [[base.pipeline]]), as a study file holds its base config.
std::string config_to_toml(const RunConfig& config, const std::string& table_prefix = "");
nlohmann::json config_to_json(const RunConfig& config);
RunConfig config_from_json(const nlohmann::json& j);
void save_config_file(const RunConfig& config, const std::string& path);

// Applies "section.key=value" (or "key=value" for top-level keys), parsing value as the key's
// type. Throws ConfigError for an unknown key or a value of the wrong type.
void apply_override(RunConfig& config, const std::string& assignment);

// Every key as apply_override takes it ("name", "objective.beta", ...), in file order.
std::vector<std::string> config_keys();
// Whether model.lora.target_modules / exclude_modules text is PEFT's regular expression (one
// string PEFT full-matches against whole module names) rather than a list of names: it holds one
// of * + ? ( ) [ ] { } | ^ $ \ (never in a module name; '.' is).
bool is_module_pattern(const std::string& text);
// The text as that pattern, trimmed; empty where it lists names.
std::string lora_module_pattern(const std::string& text);
// The names model.lora.target_modules lists, in order, without repeats; throws ConfigError naming
// one no supported model has (core/model/lora_targets.h reads them against a model). A regular
// expression gives no names (lora_spec takes it as the pattern); throws if it does not compile.
std::vector<std::string> lora_target_modules(const std::string& text);
// The other [model.lora] lists read (core/model/lora_targets.h applies them); each throws
// ConfigError naming its key and the item that is wrong.
std::vector<int64_t> lora_layers(const std::string& text);                // "0, 2, 4-7"
std::vector<std::string> lora_exclude_modules(const std::string& text);   // known module names (none for a pattern)
std::vector<std::string> lora_modules_to_save(const std::string& text);   // names, each once (checked against the model later)
std::vector<int64_t> lora_token_indices(const std::string& text);         // "5, 128000-128010", each once
std::vector<std::pair<std::string, int64_t>> lora_rank_pattern(const std::string& text);  // "pattern=16, ..."
std::vector<std::pair<std::string, double>> lora_alpha_pattern(const std::string& text);  // "pattern=32, ..."
// The value of a key as override text ("0.1", "true", "sigmoid"); throws ConfigError when unknown.
std::string config_value_text(const RunConfig& config, const std::string& key);

// Every problem found, one actionable message each; empty when the config is usable.
std::vector<std::string> validate_config(const RunConfig& config);
// "auto", "cpu", "cuda" or "cuda:N": what `device` (and the CLI's --device) may be.
bool is_valid_device(const std::string& device);
// Throws ConfigError listing every problem.
void validate_or_throw(const RunConfig& config);
// The inputs the config names that are not there (against the current directory, as
// make_paths_absolute reads them): model.checkpoint / model.reference not a folder, data.train /
// data.eval not a file where a data file is read. One message each, starting with the key; what
// the run would refuse at its start, which a form says before.
std::vector<std::string> missing_inputs(const RunConfig& config);

// Turns relative file and folder paths (output_dir, model.checkpoint, model.reference,
// data.train, data.eval) into absolute ones against the current directory, so a config stored
// in the run store means the same thing to a worker started elsewhere.
void make_paths_absolute(RunConfig& config);

// Whether a model with `vocab_size` entries scores responses through chunked_logps.h under
// train.chunked_logps ("auto": above 100k entries).
bool uses_chunked_logps(const TrainConfig& train, int64_t vocab_size);

// The batch of held-out evaluations and precomputed reference log-probs:
// train.per_device_eval_batch_size, or where that is 0 the training batch, at least 8.
int64_t eval_batch_size(const TrainConfig& train);
// The positions per chunk there: about 128 MiB of float32 logits on a GPU, 32 MiB on the CPU,
// at least 16.
int64_t chunked_logps_rows(int64_t vocab_size, bool cuda);

// Whether the run trains on a built-in task (data.builtin names one, or "auto" without
// data.train), rather than on data.train.
bool uses_builtin_task(const DataConfig& data);
// The built-in task's name ("auto" without data.train: "lists"); "" for data files.
std::string builtin_task_name(const DataConfig& data);
// Replaces data.builtin = "auto" by the source it picks ("lists" or ""), so a stored config
// says which data the run uses.
void resolve_data_source(DataConfig& data);

// eval.temperatures as numbers; throws ConfigError naming the item that is not a number >= 0.
std::vector<double> parse_temperatures(const std::string& text);

// Default beta for the loss type when beta is 0 (unset).
double effective_beta(const ObjectiveConfig& objective);

}  // namespace ganpo
