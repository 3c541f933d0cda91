#include "ui/new_run_dialog.h"

#include <QCheckBox>
#include <QColor>
#include <QComboBox>
#include <QDialogButtonBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QMessageBox>
#include <QPushButton>
#include <QTabBar>
#include <QTabWidget>
#include <QVBoxLayout>

#include <algorithm>
#include <exception>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/memory_estimate.h"
#include "core/model/lora_targets.h"
#include "core/model/model_shape.h"
#include "core/tasks/task.h"
#include "core/tokenizer.h"
#include "ui/config_form.h"
#include "ui/dataset_preview.h"
#include "ui/form_page.h"
#include "ui/memory_estimate_label.h"
#include "ui/model_folder_panel.h"
#include "ui/run_presets.h"

namespace ganpo::ui {
namespace {

enum LengthMode { kTrainForSteps = 0, kTrainForEpochs = 1 };

const QString kPresetsFilter = QStringLiteral("Run configs (*.toml *.json);;All files (*)");

}  // namespace

NewRunDialog::NewRunDialog(QWidget* parent) : QDialog(parent) {
  setWindowTitle(tr("New Run"));
  setObjectName(QStringLiteral("newRunDialog"));
  form_ = new ConfigForm(this);

  auto* layout = new QVBoxLayout(this);
  buildTopRow(this);

  pages_ = new QTabWidget(this);
  pages_->addTab(buildModelPage(), tr("Model"));
  pages_->addTab(buildDataPage(), tr("Data"));
  pages_->addTab(buildObjectivePage(), tr("Objective"));
  pages_->addTab(buildOptimisationPage(), tr("Optimisation"));
  pages_->addTab(buildDevicePage(), tr("Device"));
  pages_->addTab(buildMonitoringPage(), tr("Monitoring"));
  layout->addWidget(pages_, 1);

  memory_ = new MemoryEstimateLabel(this);
  summary_ = new QLabel(this);
  summary_->setObjectName(QStringLiteral("problemSummary"));
  summary_->setWordWrap(true);
  summary_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  layout->addWidget(memory_);
  layout->addWidget(summary_);

  buttons_ = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, this);
  buttons_->button(QDialogButtonBox::Ok)->setText(tr("Create run"));
  auto* load = buttons_->addButton(tr("Load config…"), QDialogButtonBox::ActionRole);
  auto* save = buttons_->addButton(tr("Save config…"), QDialogButtonBox::ActionRole);
  load->setObjectName(QStringLiteral("loadConfig"));
  save->setObjectName(QStringLiteral("saveConfig"));
  connect(load, &QPushButton::clicked, this, &NewRunDialog::onLoadClicked);
  connect(save, &QPushButton::clicked, this, &NewRunDialog::onSaveClicked);
  connect(buttons_, &QDialogButtonBox::accepted, this, [this]() {
    if (problems_.isEmpty()) accept();
  });
  connect(buttons_, &QDialogButtonBox::rejected, this, &QDialog::reject);
  layout->addWidget(buttons_);

  connect(form_, &ConfigForm::edited, this, &NewRunDialog::revalidate);
  resize(1000, 780);
  setConfig(RunConfig{});
}

void NewRunDialog::buildTopRow(QWidget* parent) {
  auto* layout = static_cast<QVBoxLayout*>(this->layout());
  auto* presets = new QHBoxLayout;
  auto* label = new QLabel(tr("&Preset:"), parent);
  preset_combo_ = new QComboBox(parent);
  preset_combo_->setObjectName(QStringLiteral("preset"));
  preset_combo_->addItem(tr("Custom"), QString());
  for (const QString& stem : presetFileStems()) preset_combo_->addItem(run_preset_title(stem), stem);
  label->setBuddy(preset_combo_);
  presets->addWidget(label);
  presets->addWidget(preset_combo_, 1);
  presets->addStretch(1);
  layout->addLayout(presets);
  connect(preset_combo_, &QComboBox::activated, this, &NewRunDialog::onPresetActivated);

  auto* run = new FormSection(tr("Run"), parent);
  form_->addText(run, GANPO_CONFIG_KEY(name), tr("Name"), tr("The run's display name in the run list."));
  form_->addPath(run, GANPO_CONFIG_KEY(output_dir), tr("Output folder"), ConfigForm::PathKind::Folder,
                 tr("Checkpoints, config.toml, metrics.jsonl and the event log go here."));
  layout->addWidget(run);

  // Stages trained before this config ([[pipeline]]): shown, and removable, not edited here.
  pipeline_row_ = new QWidget(parent);
  auto* row = new QHBoxLayout(pipeline_row_);
  row->setContentsMargins(0, 0, 0, 0);
  pipeline_ = new QLabel(pipeline_row_);
  pipeline_->setObjectName(QStringLiteral("pipelineSummary"));
  pipeline_->setWordWrap(true);
  pipeline_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  auto* drop = new QPushButton(tr("Train this stage only"), pipeline_row_);
  drop->setObjectName(QStringLiteral("dropPipeline"));
  drop->setToolTip(tr("Remove the earlier stages: this config then trains alone, from its model folder or a fresh model."));
  row->addWidget(pipeline_, 1);
  row->addWidget(drop);
  layout->addWidget(pipeline_row_);
  connect(drop, &QPushButton::clicked, this, [this] {
    base_ = config();
    base_.pipeline.clear();
    revalidate();
  });
}

QWidget* NewRunDialog::buildModelPage() {
  auto* page = new FormPage;
  auto* start = page->addSection(tr("Start from"));
  form_->addPath(start, GANPO_CONFIG_KEY(model.checkpoint), tr("Model folder"), ConfigForm::PathKind::Folder,
                 tr("A Hugging Face model folder (config.json, model.safetensors or shards, tokenizer.json) or a "
                    "checkpoint of an earlier run; empty = a fresh model of the shape below."));
  model_folder_ = new ModelFolderPanel(start);
  start->addWideRow(model_folder_);
  connect(model_folder_, &ModelFolderPanel::described, this, &NewRunDialog::revalidate);  // (its problem counts)
  random_weights_ = form_->addBool(start, GANPO_CONFIG_KEY(model.random_weights), tr("Random weights (its architecture only)"),
                 tr("Build the model folder's architecture from its config.json with fresh random weights, as "
                    "transformers' from_config does: to train from scratch, or to measure speed and memory at a real "
                    "model's size from its config.json alone. Its tokenizer if it has one, else the byte tokenizer."));
  reference_ = form_->addPath(start, GANPO_CONFIG_KEY(model.reference), tr("Reference model"),
                              ConfigForm::PathKind::Folder,
                              tr("Frozen reference for the preference losses and GANPO's reference latents; empty = "
                                 "the model folder above (its weights as loaded), as TRL does."));

  auto* lora = page->addSection(tr("LoRA adapters"));
  form_->addInt(lora, GANPO_CONFIG_KEY(model.lora.r), tr("Rank (r)"),
                tr("0 = train every weight. Above 0 the model folder's weights stay frozen and low-rank adapters "
                   "are trained (PEFT's LoRA); the reference is then the same model with its adapters off, so no "
                   "second copy of the weights is held."));
  form_->addDouble(lora, GANPO_CONFIG_KEY(model.lora.alpha), tr("Alpha"),
                   tr("The adapters' update is scaled by alpha / r (PEFT's lora_alpha)."));
  form_->addBool(lora, GANPO_CONFIG_KEY(model.lora.use_rslora), tr("Rank-stabilised scale (rsLoRA)"),
                 tr("Scale the update by alpha / sqrt(r) instead of alpha / r (PEFT's use_rslora), so higher ranks "
                    "keep learning at the same rate."));
  form_->addBool(lora, GANPO_CONFIG_KEY(model.lora.use_dora), tr("Weight-decomposed (DoRA)"),
                 tr("PEFT's use_dora: each adapted weight also learns a magnitude per output row; a step costs "
                    "somewhat more time and memory than plain LoRA."));
  form_->addDouble(lora, GANPO_CONFIG_KEY(model.lora.dropout), tr("Dropout"),
                   tr("Dropout on the adapters' input while training an SFT stage, in [0, 1). A preference stage "
                      "runs its policy without dropout, as TRL's DPOTrainer does by default."));
  form_->addEditableChoice(lora, GANPO_CONFIG_KEY(model.lora.target_modules), tr("Target modules"),
                           {QStringLiteral("q_proj,k_proj,v_proj,o_proj"), QStringLiteral("q_proj,v_proj"),
                            QStringLiteral("all-linear")},
                           tr("Comma-separated: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, "
                              "embed_tokens (the token embedding), lm_head (the output head; where the two are tied, "
                              "the one not adapted keeps the original weights), the "
                              "model's Hugging Face names as PEFT takes them (GPT-2: c_attn, c_proj, c_fc, wte), "
                              "all-linear, or PEFT's regular expression over whole module names "
                              "(.*\\.layers\\.1\\..*_proj). Checkpoints hold the merged model and, in adapter/, a PEFT "
                              "adapter folder."));
  form_->addText(lora, GANPO_CONFIG_KEY(model.lora.layers_to_transform), tr("Layers"),
                 tr("PEFT's layers_to_transform: the layers the projections above are adapted in, e.g. 0, 1 or "
                    "20-31; empty = every layer."));
  form_->addText(lora, GANPO_CONFIG_KEY(model.lora.exclude_modules), tr("Excluded modules"),
                 tr("PEFT's exclude_modules: modules not to adapt, by their whole name "
                    "(model.layers.0.self_attn.q_proj), its end (down_proj), or a regular expression."));
  form_->addText(lora, GANPO_CONFIG_KEY(model.lora.rank_pattern), tr("Rank per module"),
                 tr("PEFT's rank_pattern: pattern=rank items, e.g. self_attn.q_proj=16, layers.0.mlp.down_proj=4. A "
                    "pattern is a Python regular expression matched against the end of module names; the first "
                    "that matches wins; the others keep Rank (r)."));
  form_->addText(lora, GANPO_CONFIG_KEY(model.lora.alpha_pattern), tr("Alpha per module"),
                 tr("PEFT's alpha_pattern: pattern=alpha items, as Rank per module; the others keep Alpha."));
  form_->addText(lora, GANPO_CONFIG_KEY(model.lora.modules_to_save), tr("Modules trained whole"),
                 tr("PEFT's modules_to_save: modules trained in full besides the adapters, e.g. lm_head, embed_tokens "
                    "(after adding tokens) or norm; a name picks every module whose name ends with it, and the "
                    "projections under one get no adapter, as in PEFT. The reference keeps the originals."));
  form_->addText(lora, GANPO_CONFIG_KEY(model.lora.trainable_token_indices), tr("Trained token rows"),
                 tr("PEFT's trainable_token_indices: token ids whose embedding rows train (e.g. new chat tokens: "
                    "128256-128263), the rest of the embedding frozen; a head tied to the embedding follows them."));
  form_->addChoice(lora, GANPO_CONFIG_KEY(model.lora.init_lora_weights), tr("Initialisation"),
                   {{QStringLiteral("default"), tr("Default (B zero)")},
                    {QStringLiteral("gaussian"), tr("Gaussian A (B zero)")},
                    {QStringLiteral("pissa"), tr("PiSSA (top singular vectors)")},
                    {QStringLiteral("olora"), tr("OLoRA (QR factors)")}},
                   tr("PEFT's init_lora_weights. PiSSA and OLoRA start the adapters from each adapted weight's "
                      "factors and subtract their first values, so the run starts at the model and its reference "
                      "stays the model; the adapter folder is PEFT's conversion to plain LoRA of rank 2 r. "
                      "Projections only, without DoRA."));
  form_->addChoice(lora, GANPO_CONFIG_KEY(model.lora.bias), tr("Trained biases"),
                   {{QStringLiteral("none"), tr("None")},
                    {QStringLiteral("all"), tr("All of the model's")},
                    {QStringLiteral("lora_only"), tr("The adapted modules'")}},
                   tr("PEFT's bias: also train the biases of every module (all: GPT-2's projections and LayerNorms, "
                      "Qwen2's q, k and v) or of the adapted modules (lora_only); Llama, Mistral and Gemma have none. "
                      "The reference keeps the original biases."));
  form_->addBool(lora, GANPO_CONFIG_KEY(model.lora.ensure_weight_tying), tr("Keep a tied head tied"),
                 tr("PEFT's ensure_weight_tying: where the output head is the token embedding, training either trains "
                    "one copy that stays both. Off (PEFT's default), they are untied."));

  shape_section_ = page->addSection(tr("Architecture (fresh model)"));
  auto* shape = shape_section_;
  form_->addChoice(shape, GANPO_CONFIG_KEY(model.preset), tr("Size"),
                   {{QStringLiteral("tiny"), tr("Tiny (llama, d 128, 4 layers, 0.9M)")},
                    {QStringLiteral("small"), tr("Small (llama, d 384, 6 layers, 10.6M)")},
                    {QStringLiteral("base"), tr("Base (gpt2, d 768, 12 layers)")},
                    {QString(), tr("Explicit shape (fields below)")}},
                   tr("A built-in size, or \"explicit shape\" to set every dimension below."));
  form_->addChoice(shape, GANPO_CONFIG_KEY(model.arch), tr("Architecture"),
                   {{QString(), tr("The preset's")},
                    {QStringLiteral("llama"), tr("Llama (RMSNorm, RoPE, SwiGLU, GQA)")},
                    {QStringLiteral("gpt2"), tr("GPT-2 (LayerNorm, learned positions, GELU)")}});
  const QString zero_is_preset = tr("0 = the preset's value");
  for (QLineEdit* edit : {form_->addInt(shape, GANPO_CONFIG_KEY(model.d_model), tr("Hidden size (d_model)")),
                          form_->addInt(shape, GANPO_CONFIG_KEY(model.n_layers), tr("Layers")),
                          form_->addInt(shape, GANPO_CONFIG_KEY(model.n_heads), tr("Attention heads")),
                          form_->addInt(shape, GANPO_CONFIG_KEY(model.n_kv_heads), tr("Key/value heads (GQA)"),
                                        tr("0 = as many as attention heads")),
                          form_->addInt(shape, GANPO_CONFIG_KEY(model.d_ff), tr("MLP width (d_ff)"),
                                        tr("0 = derived: 8/3 d rounded to 64 (llama), 4 d (gpt2)")),
                          form_->addInt(shape, GANPO_CONFIG_KEY(model.max_seq_len), tr("Max positions"))})
    edit->setToolTip(edit->toolTip().isEmpty() ? zero_is_preset : edit->toolTip());
  form_->addDouble(shape, GANPO_CONFIG_KEY(model.rope_theta), tr("RoPE theta"));
  resolved_shape_ = new QLabel(page);
  resolved_shape_->setObjectName(QStringLiteral("resolvedShape"));
  resolved_shape_->setWordWrap(true);
  shape->addWideRow(resolved_shape_);

  auto* saving = page->addSection(tr("Saved checkpoints"));
  form_->addChoice(saving, GANPO_CONFIG_KEY(model.save_dtype), tr("Weights saved as"),
                   {{QString(), tr("The dtype they were loaded in")},
                    {QStringLiteral("float32"), tr("float32")},
                    {QStringLiteral("bfloat16"), tr("bfloat16")},
                    {QStringLiteral("float16"), tr("float16")}},
                   tr("Checkpoints and final/ are Hugging Face folders; this is their torch_dtype."));
  form_->addInt(saving, GANPO_CONFIG_KEY(model.max_shard_mb), tr("Shard size (MB)"),
                tr("Weights above this size are split into model-0000i-of-0000n.safetensors with an index, as "
                   "transformers does (its default is 5000)."));
  return page;
}

QWidget* NewRunDialog::buildDataPage() {
  auto* page = new FormPage;
  auto* source = page->addSection(tr("Source"));
  std::vector<std::pair<QString, QString>> sources{
      {QStringLiteral("auto"), tr("The training file below if one is named, else the built-in lists task")}};
  for (const Task* task : builtin_tasks())
    sources.emplace_back(QString::fromStdString(task->name()), QString::fromStdString(task->description()));
  sources.emplace_back(QString(), tr("JSONL / JSON file (TRL format)"));
  form_->addChoice(source, GANPO_CONFIG_KEY(data.builtin), tr("Data"), sources);
  form_->addDouble(source, GANPO_CONFIG_KEY(data.label_noise), tr("Label noise"),
                   tr("Fraction of training pairs with chosen and rejected swapped, in [0, 1] (seeded by the run)."));

  builtin_data_ = page->addSection(tr("Built-in task"));
  form_->addInt(builtin_data_, GANPO_CONFIG_KEY(data.builtin_train_size), tr("Training examples"));
  form_->addInt(builtin_data_, GANPO_CONFIG_KEY(data.builtin_eval_size), tr("Held-out examples"));

  file_data_ = page->addSection(tr("Files"));
  form_->addPath(file_data_, GANPO_CONFIG_KEY(data.train), tr("Training file"), ConfigForm::PathKind::File,
                 tr("prompt / chosen / rejected strings, or conversational message lists."));
  form_->addPath(file_data_, GANPO_CONFIG_KEY(data.eval), tr("Held-out file"), ConfigForm::PathKind::File,
                 tr("Optional; empty = hold out a fraction of the training file."));
  form_->addDouble(file_data_, GANPO_CONFIG_KEY(data.eval_fraction), tr("Held-out fraction"));
  form_->addEditableChoice(file_data_, GANPO_CONFIG_KEY(data.chat_template), tr("Chat template"),
                           {QString(), QStringLiteral("llama3"), QStringLiteral("gemma"), QStringLiteral("chatml"),
                            QStringLiteral("qwen3"), QStringLiteral("llama2"), QStringLiteral("mistral")},
                           tr("How conversational rows (message lists) are rendered. Empty = the model folder's own "
                              "template, recognised in its tokenizer_config.json; or a family / variant name."));
  form_->addChoice(file_data_, GANPO_CONFIG_KEY(data.on_bad_line), tr("On a bad line"),
                   {{QStringLiteral("error"), tr("Stop with an error naming the line")},
                    {QStringLiteral("skip"), tr("Skip it and count it")}});
  preview_ = new DatasetPreviewWidget(file_data_);
  file_data_->addWideRow(preview_);
  connect(preview_, &DatasetPreviewWidget::previewShown, this, &NewRunDialog::revalidate);  // (its problems)
  return page;
}

QWidget* NewRunDialog::buildObjectivePage() {
  auto* page = new FormPage;
  auto* loss = page->addSection(tr("Loss"));
  form_->addChoice(loss, GANPO_CONFIG_KEY(stage), tr("Stage"),
                   {{QStringLiteral("preference"), tr("Preference optimisation")},
                    {QStringLiteral("sft"), tr("Supervised fine-tuning (SFT)")}});
  form_->addChoice(loss, GANPO_CONFIG_KEY(objective.loss_type), tr("Base loss"),
                   {{QStringLiteral("sigmoid"), tr("DPO (sigmoid)")},
                    {QStringLiteral("simpo"), tr("SimPO")},
                    {QStringLiteral("ipo"), tr("IPO")},
                    {QStringLiteral("hinge"), tr("Hinge (SLiC)")}});
  form_->addDouble(loss, GANPO_CONFIG_KEY(objective.beta), tr("Beta"),
                   tr("0 = the loss's default (0.1; SimPO 2.5)."));
  form_->addDouble(loss, GANPO_CONFIG_KEY(objective.simpo_gamma), tr("SimPO gamma"),
                   tr("Target reward margin of SimPO; other losses ignore it."));
  form_->addDouble(loss, GANPO_CONFIG_KEY(objective.rpo_alpha), tr("RPO alpha"),
                   tr("Weight of an NLL term on the chosen responses; 0 = off."));

  auto* ganpo = page->addSection(tr("GANPO latent adversarial regularizer"));
  form_->addBool(ganpo, GANPO_CONFIG_KEY(ganpo.enabled), tr("Enabled"),
                 tr("Two critics on the policy's and the reference's hidden states."));
  form_->addDouble(ganpo, GANPO_CONFIG_KEY(ganpo.adv_weight), tr("Lambda (adversarial weight)"));

  ganpo_section_ = page->addSection(tr("Critics"));
  form_->addInt(ganpo_section_, GANPO_CONFIG_KEY(ganpo.critic_hidden), tr("Width"));
  form_->addInt(ganpo_section_, GANPO_CONFIG_KEY(ganpo.critic_layers), tr("Layers"));
  form_->addInt(ganpo_section_, GANPO_CONFIG_KEY(ganpo.critic_heads), tr("Heads"));
  form_->addInt(ganpo_section_, GANPO_CONFIG_KEY(ganpo.critic_ffn_mult), tr("FFN multiple"));
  form_->addInt(ganpo_section_, GANPO_CONFIG_KEY(ganpo.critic_max_len), tr("Max positions"));
  form_->addDouble(ganpo_section_, GANPO_CONFIG_KEY(ganpo.critic_dropout), tr("Dropout"));
  form_->addDouble(ganpo_section_, GANPO_CONFIG_KEY(ganpo.critic_lr_ratio), tr("Learning-rate ratio"),
                   tr("Critic learning rate = policy learning rate x this."));
  form_->addDouble(ganpo_section_, GANPO_CONFIG_KEY(ganpo.ema_momentum), tr("EMA momentum"),
                   tr("Momentum of the relativistic means, in [0, 1)."));
  form_->addChoice(ganpo_section_, GANPO_CONFIG_KEY(ganpo.critic_mask), tr("Critic mask"),
                   {{QStringLiteral("attention"), tr("Attention mask (prompt + response)")},
                    {QStringLiteral("response"), tr("Response tokens only")},
                    {QStringLiteral("none"), tr("None (every position)")}});
  form_->addInt(ganpo_section_, GANPO_CONFIG_KEY(ganpo.critic_update_every), tr("Critic step every"),
                tr("Optimizer steps between critic steps."));
  return page;
}

QWidget* NewRunDialog::buildOptimisationPage() {
  auto* page = new FormPage;
  auto* optimiser = page->addSection(tr("Optimiser (AdamW)"));
  form_->addDouble(optimiser, GANPO_CONFIG_KEY(train.learning_rate), tr("Learning rate"));
  form_->addChoice(optimiser, GANPO_CONFIG_KEY(train.lr_scheduler_type), tr("Schedule"),
                   {{QStringLiteral("constant"), tr("Constant")},
                    {QStringLiteral("linear"), tr("Linear decay")},
                    {QStringLiteral("cosine"), tr("Cosine decay")}});
  form_->addDouble(optimiser, GANPO_CONFIG_KEY(train.warmup_ratio), tr("Warmup ratio"));
  form_->addDouble(optimiser, GANPO_CONFIG_KEY(train.weight_decay), tr("Weight decay"),
                   tr("AdamW's decoupled weight decay, on every trained tensor but the biases and the norms' weights, as "
                      "transformers' Trainer (and so TRL) applies it."));
  form_->addDouble(optimiser, GANPO_CONFIG_KEY(train.max_grad_norm), tr("Gradient clip (max norm)"),
                   tr("0 = no clipping."));
  form_->addDouble(optimiser, GANPO_CONFIG_KEY(train.adam_beta1), tr("Adam beta1"));
  form_->addDouble(optimiser, GANPO_CONFIG_KEY(train.adam_beta2), tr("Adam beta2"));
  form_->addDouble(optimiser, GANPO_CONFIG_KEY(train.adam_epsilon), tr("Adam epsilon"));

  auto* batches = page->addSection(tr("Batches and length"));
  form_->addInt(batches, GANPO_CONFIG_KEY(train.per_device_train_batch_size), tr("Batch size"),
                tr("Pairs per micro-batch (each pair is a chosen and a rejected row)."));
  form_->addInt(batches, GANPO_CONFIG_KEY(train.per_device_eval_batch_size), tr("Evaluation batch size"),
                tr("Pairs per batch of the held-out evaluations and precomputed reference log-probs, which keep "
                   "no activations for a backward pass. 0 = the batch size, at least 8."));
  form_->addInt(batches, GANPO_CONFIG_KEY(train.gradient_accumulation_steps), tr("Gradient accumulation"));
  form_->addBool(batches, GANPO_CONFIG_KEY(train.auto_find_batch_size), tr("Find a batch size that fits"),
                 tr("Where a step runs out of memory, go on with half the batch size and twice the accumulation (the "
                    "rows per optimizer step stay), from the newest checkpoint or the start; an evaluation that runs "
                    "out goes on with half its batch. Over several processes, all of them start again from the newest "
                    "checkpoint with the smaller batch. On the CPU the system may stop a process that asks for more "
                    "memory than it has before any allocation fails, so a run there starts with the batches the "
                    "memory estimate says fit."));

  length_mode_ = new QComboBox(batches);
  length_mode_->setObjectName(QStringLiteral("lengthMode"));
  length_mode_->addItem(tr("A number of optimizer steps"), kTrainForSteps);
  length_mode_->addItem(tr("A number of epochs"), kTrainForEpochs);
  batches->addRow(tr("Train for"), length_mode_, nullptr);
  max_steps_ = new QLineEdit(batches);
  max_steps_->setObjectName(QStringLiteral("train.max_steps"));
  QLabel* steps_error = form_->addCustom(
      QStringLiteral("train.max_steps"), max_steps_,
      [this](const RunConfig& c) {
        const bool epochs = c.train.max_steps == -1;
        length_mode_->setCurrentIndex(epochs ? kTrainForEpochs : kTrainForSteps);
        max_steps_->setText(epochs ? QString() : QString::number(c.train.max_steps));
      },
      [this](RunConfig& c) -> QString {
        if (length_mode_->currentIndex() == kTrainForEpochs) {
          c.train.max_steps = -1;
          return {};
        }
        int64_t v = 0;
        if (!parse_config_int(max_steps_->text(), v))
          return tr("train.max_steps must be an integer, got \"%1\"").arg(max_steps_->text());
        c.train.max_steps = v;
        return {};
      });
  max_steps_->setPlaceholderText(tr("steps"));
  batches->addRow(tr("Max steps"), max_steps_, steps_error);
  connect(max_steps_, &QLineEdit::textChanged, this, [this]() {
    if (!loading_) revalidate();
  });
  connect(length_mode_, &QComboBox::currentIndexChanged, this, [this](int mode) {
    if (loading_) return;
    if (mode == kTrainForSteps && max_steps_->text().trimmed().isEmpty()) max_steps_->setText(QStringLiteral("1000"));
    revalidate();
  });
  epochs_ = form_->addDouble(batches, GANPO_CONFIG_KEY(train.num_train_epochs), tr("Epochs"));
  form_->addInt(batches, GANPO_CONFIG_KEY(data.max_length), tr("Max length (tokens)"),
                tr("Prompt + response tokens per row."));
  form_->addInt(batches, GANPO_CONFIG_KEY(data.max_prompt_length), tr("Max prompt length"));
  form_->addBool(batches, GANPO_CONFIG_KEY(train.group_by_length), tr("Group rows by length"),
                 tr("Batches of rows of similar length (transformers' group_by_length): less padding, so "
                    "faster steps where lengths vary; the epoch's longest row comes first, so memory trouble "
                    "shows early."));

  auto* numerics = page->addSection(tr("Numerics"));
  form_->addChoice(numerics, GANPO_CONFIG_KEY(train.precision), tr("Precision"),
                   {{QStringLiteral("fp32"), tr("fp32")},
                    {QStringLiteral("bf16"), tr("bf16 autocast (LibTorch 2.x + CUDA)")}});
  form_->addBool(numerics, GANPO_CONFIG_KEY(train.gradient_checkpointing), tr("Gradient checkpointing"),
                 tr("Keep only each layer's input and recompute the layer in the backward pass: much less "
                    "activation memory (see the estimate below) for about a third more compute per step."));
  form_->addBool(numerics, GANPO_CONFIG_KEY(train.deterministic), tr("Deterministic kernels"),
                 tr("Only deterministic kernels (and no cuDNN autotuning): on a GPU, what makes a resumed run "
                    "bitwise equal to an uninterrupted one, at some speed. CPU runs are reproducible without it."));
  form_->addBool(numerics, GANPO_CONFIG_KEY(train.precompute_ref_log_probs), tr("Precompute reference log-probs"),
                 tr("Preference stages: the reference scores every pair once before the first step (TRL's "
                    "precompute_ref_log_probs), so steps skip its output head; with GANPO off it does not run "
                    "during training at all."));
  form_->addBool(numerics, GANPO_CONFIG_KEY(train.prefix_sharing), tr("Share each prompt's forward pass"),
                 tr("Preference stages: a pair's prompt runs once and both responses attend to it (prefix "
                    "sharing): the same numbers for less work, most where prompts are long."));
  form_->addChoice(numerics, GANPO_CONFIG_KEY(train.chunked_logps), tr("Output head"),
                   {{QStringLiteral("auto"), tr("Chunked above 100k vocabulary entries")},
                    {QStringLiteral("on"), tr("Chunked: no full logits kept")},
                    {QStringLiteral("off"), tr("Full logits")}},
                   tr("Chunked: response log-probs are computed over chunks of positions and each chunk again "
                      "in the backward pass, so the logits (batch x length x vocabulary) are never held: much "
                      "less memory with large vocabularies, for one more output-head product per token."));
  form_->addInt(numerics, GANPO_CONFIG_KEY(seed), tr("Seed"));
  return page;
}

QWidget* NewRunDialog::buildDevicePage() {
  auto* page = new FormPage;
  auto* device = page->addSection(tr("Device"));
  form_->addEditableChoice(device, GANPO_CONFIG_KEY(device), tr("Device"),
                           {QStringLiteral("auto"), QStringLiteral("cpu"), QStringLiteral("cuda"),
                            QStringLiteral("cuda:0"), QStringLiteral("cuda:1")},
                           tr("auto = the first CUDA GPU if there is one, else the CPU; cuda:N picks GPU N."));
  form_->addInt(device, GANPO_CONFIG_KEY(train.num_threads), tr("CPU threads"),
                tr("0 = all cores, shared evenly with other runs training on this machine at the same time."));
  form_->addInt(device, GANPO_CONFIG_KEY(train.num_processes), tr("Processes"),
                tr("Data parallelism: this many worker processes on this machine, each with a batch of the "
                   "size above (one GPU each on CUDA); gradients are averaged, so N processes train like one "
                   "with N times the batch. Several machines: ganpo launch (see the README)."));
  auto* note = new QLabel(tr("The memory estimate below is what one training process needs on this device; "
                             "compare it with the GPU's memory (or the machine's RAM for the CPU)."),
                          device);
  note->setWordWrap(true);
  device->addWideRow(note);
  return page;
}

QWidget* NewRunDialog::buildMonitoringPage() {
  auto* page = new FormPage;
  auto* steps = page->addSection(tr("Logging, evaluation and checkpoints"));
  form_->addInt(steps, GANPO_CONFIG_KEY(train.logging_steps), tr("Log metrics every"), tr("Optimizer steps."));
  form_->addInt(steps, GANPO_CONFIG_KEY(train.eval_steps), tr("Evaluate every"), tr("0 = only at the end."));
  form_->addInt(steps, GANPO_CONFIG_KEY(train.save_steps), tr("Checkpoint every"), tr("0 = only at the end."));

  auto* sampling = page->addSection(tr("Samples"));
  form_->addInt(sampling, GANPO_CONFIG_KEY(sampling.every_steps), tr("Sample every"),
                tr("0 = only at the start and the end."));
  form_->addInt(sampling, GANPO_CONFIG_KEY(sampling.num_prompts), tr("Fixed prompts"));
  form_->addDouble(sampling, GANPO_CONFIG_KEY(sampling.temperature), tr("Temperature"));
  form_->addDouble(sampling, GANPO_CONFIG_KEY(sampling.top_p), tr("Top-p"));
  form_->addInt(sampling, GANPO_CONFIG_KEY(sampling.top_k), tr("Top-k"), tr("0 = off."));
  form_->addInt(sampling, GANPO_CONFIG_KEY(sampling.max_new_tokens), tr("Max new tokens"));

  auto* judge = page->addSection(tr("Judge evaluation at the end"));
  form_->addBool(judge, GANPO_CONFIG_KEY(eval.judge_at_end), tr("Judge policy vs reference"),
                 tr("After a preference stage, sample policy and reference on the task's evaluation prompts and "
                    "judge every completion (a built-in task's judge, or the command below)."));
  form_->addText(judge, GANPO_CONFIG_KEY(eval.temperatures), tr("Temperatures"),
                 tr("Comma-separated sampling temperatures, e.g. 0.5, 0.7, 1.0, 1.3, 1.5."));
  form_->addInt(judge, GANPO_CONFIG_KEY(eval.num_prompts), tr("Prompts"),
                tr("Built-in tasks generate them; data files use the first distinct held-out prompts."));
  form_->addInt(judge, GANPO_CONFIG_KEY(eval.max_new_tokens), tr("Max new tokens"), tr("0 = as for samples."));
  form_->addText(judge, GANPO_CONFIG_KEY(eval.judge_command), tr("Judge command"),
                 tr("Scores completions: JSON Lines {\"prompt\", \"completion\"} on stdin, {\"score\"} per line on "
                    "stdout. Needed for data files; replaces a built-in task's judge."));
  return page;
}

void NewRunDialog::setConfig(const RunConfig& config) {
  base_ = config;
  loading_ = true;
  form_->show(config);
  loading_ = false;
  revalidate();
}

RunConfig NewRunDialog::config() const { return form_->read(base_, nullptr); }

QStringList NewRunDialog::presetFileStems() { return run_preset_stems(); }

bool NewRunDialog::selectPreset(const QString& file_stem) {
  RunConfig preset;
  try {
    preset = load_run_preset(file_stem);
  } catch (const std::exception&) {
    return false;
  }
  setConfig(preset);
  const int index = preset_combo_->findData(file_stem);
  if (index >= 0) preset_combo_->setCurrentIndex(index);
  return true;
}

void NewRunDialog::onPresetActivated(int index) {
  const QString stem = preset_combo_->itemData(index).toString();
  if (stem.isEmpty()) return;  // "Custom" keeps what is in the form
  if (!selectPreset(stem))
    QMessageBox::warning(this, tr("Cannot load preset"), tr("The built-in preset \"%1\" could not be read.").arg(stem));
}

bool NewRunDialog::loadConfigFile(const QString& path) {
  try {
    setConfig(load_config_file(path.toStdString()));
  } catch (const std::exception& e) {
    QMessageBox::warning(this, tr("Cannot load config"), QString::fromStdString(e.what()));
    return false;
  }
  preset_combo_->setCurrentIndex(0);
  return true;
}

bool NewRunDialog::saveConfigFile(const QString& path) {
  QString target = path;
  if (QFileInfo(target).suffix().isEmpty()) target += QStringLiteral(".toml");
  try {
    save_config_file(config(), target.toStdString());
  } catch (const std::exception& e) {
    QMessageBox::warning(this, tr("Cannot save config"), QString::fromStdString(e.what()));
    return false;
  }
  return true;
}

void NewRunDialog::onLoadClicked() {
  const QString path = QFileDialog::getOpenFileName(this, tr("Load run config"), {}, kPresetsFilter);
  if (!path.isEmpty()) loadConfigFile(path);
}

void NewRunDialog::onSaveClicked() {
  const QString suggested = QString::fromStdString(config().name) + QStringLiteral(".toml");
  const QString path = QFileDialog::getSaveFileName(this, tr("Save run config"), suggested, kPresetsFilter);
  if (!path.isEmpty()) saveConfigFile(path);
}

void NewRunDialog::revalidate() {
  if (loading_) return;
  QStringList parse_problems;
  const RunConfig config = form_->read(base_, &parse_problems);

  // A field whose text does not parse shows that, not a complaint about the value it kept.
  QStringList unparsed_keys;
  for (const QString& p : parse_problems) unparsed_keys.append(problem_key(p));
  QStringList problems = parse_problems;
  std::vector<std::string> messages = validate_config(config);
  // The trainer refuses this at start; saying it here saves a failed run. A checkpoint's own
  // config.json decides its length, so only a fresh model is checked.
  // (None where model.arch names no family: validate_config has said so.)
  const std::optional<ModelShape> fresh_shape = fresh_model_shape(config.model);  // from the fields
  if (fresh_shape && config.model.checkpoint.empty() && config.data.max_length > fresh_shape->max_seq_len)
    messages.push_back("data.max_length must be <= the model's max_seq_len (" + std::to_string(fresh_shape->max_seq_len) +
                       "), got " + std::to_string(config.data.max_length) +
                       "; lower it or raise model.max_seq_len");
  // So is a LoRA target name the model has no projection of (GPT-2's c_attn on a Llama folder),
  // or a layer it does not have.
  if (config.model.lora.r > 0) {
    const std::optional<ModelShape> shape =
        config.model.checkpoint.empty() ? fresh_shape : memory_->checkpointShape(config.model.checkpoint);
    try {
      if (shape) resolve_lora_targets(*shape, lora_spec(config.model.lora));
    } catch (const ConfigError& e) {
      const std::string message = e.what();
      if (std::find(messages.begin(), messages.end(), message) == messages.end()) messages.push_back(message);
    }
  }
  // What the run would refuse at its start: inputs that are not there, a folder it cannot start from.
  for (std::string& message : missing_inputs(config)) messages.push_back(std::move(message));
  if (model_folder_->folder() == QString::fromStdString(config.model.checkpoint).trimmed()) {
    if (!model_folder_->problem().isEmpty())
      messages.push_back("model.checkpoint: " + model_folder_->problem().toStdString());
    if (!config.model.random_weights && !model_folder_->weightsProblem().isEmpty())
      messages.push_back("model.checkpoint: " + model_folder_->weightsProblem().toStdString() +
                         "; or tick Random weights to train its architecture from scratch");
  }
  // What the run would stop at in its training file, as the preview read it: bad lines while a
  // bad line stops the run, no usable row, rows the chat template cannot render.
  if (!uses_builtin_task(config.data) && preview_->path() == QString::fromStdString(config.data.train).trimmed())
    for (const QString& p : preview_->problems(config.data.on_bad_line != "skip")) messages.push_back(p.toStdString());
  for (const std::string& message : messages) {
    const QString text = QString::fromStdString(message);
    if (!unparsed_keys.contains(problem_key(text))) problems.append(text);
  }
  problems_ = problems;
  form_->showProblems(problems);

  // Each tab says how many of its fields have a problem.
  static const char* const kTabTitles[] = {"Model", "Data", "Objective", "Optimisation", "Device", "Monitoring"};
  std::map<int, int> per_tab;
  for (const QString& p : problems) {
    QWidget* editor = form_->editor(problem_key(p));
    for (int i = 0; editor && i < pages_->count(); ++i)
      if (pages_->widget(i)->isAncestorOf(editor)) ++per_tab[i];
  }
  for (int i = 0; i < pages_->count(); ++i) {
    const QString title = tr(kTabTitles[i]);
    const int count = per_tab.count(i) ? per_tab[i] : 0;
    pages_->setTabText(i, count ? QStringLiteral("%1 (%2)").arg(title).arg(count) : title);
    pages_->tabBar()->setTabTextColor(i, count ? QColor(0xc6, 0x28, 0x28) : palette().color(QPalette::WindowText));
  }

  buttons_->button(QDialogButtonBox::Ok)->setEnabled(problems.isEmpty());
  if (problems.isEmpty()) {
    summary_->setStyleSheet(QStringLiteral("color: #2e7d32;"));
    summary_->setText(tr("Ready: every value is valid."));
  } else {
    summary_->setStyleSheet(QStringLiteral("color: #c62828;"));
    const QString count = problems.size() == 1 ? tr("1 problem") : tr("%1 problems").arg(problems.size());
    summary_->setText(tr("%1 to fix before the run can start (the reasons are beside the fields). First: %2")
                          .arg(count, problems.front()));
  }
  memory_->showEstimate(config);
  updateDependentWidgets(config);
}

void NewRunDialog::updateDependentWidgets(const RunConfig& c) {
  pipeline_row_->setVisible(!c.pipeline.empty());
  QStringList stages;
  for (const auto& stage : c.pipeline) {
    QStringList set;
    for (const auto& a : stage.assignments) set << QString::fromStdString(a);
    stages << tr("<b>%1</b> (%2)").arg(QString::fromStdString(stage.name).toHtmlEscaped(), set.join(", ").toHtmlEscaped());
  }
  pipeline_->setText(tr("Pipeline: trains %1 first, then this config from its final weights (and against them as "
                        "reference); %2 runs, queued together as a study and started one after another.")
                         .arg(stages.join(tr(", then ")))
                         .arg(c.pipeline.size() + 1));
  buttons_->button(QDialogButtonBox::Ok)
      ->setText(c.pipeline.empty() ? tr("Create run") : tr("Create %1 runs").arg(c.pipeline.size() + 1));
  const bool builtin = uses_builtin_task(c.data);
  builtin_data_->setVisible(builtin);
  // "auto" reads the training file where one is named, so its field shows; so do files a
  // built-in task refuses, where they can be cleared.
  file_data_->setVisible(!builtin || c.data.builtin == "auto" || !c.data.train.empty() || !c.data.eval.empty());
  PreviewTokenizing tokenizing;
  // A folder of random weights without tokenizer files trains on the byte tokenizer.
  const bool byte_tokenizer = c.model.random_weights && !has_tokenizer_files(c.model.checkpoint);
  tokenizing.model_folder = byte_tokenizer ? QString() : QString::fromStdString(c.model.checkpoint);
  tokenizing.chat_template = QString::fromStdString(c.data.chat_template);
  tokenizing.max_length = c.data.max_length;
  tokenizing.max_prompt_length = c.data.max_prompt_length;
  preview_->setSource(builtin ? QString() : QString::fromStdString(c.data.train), c.stage != "sft", tokenizing);
  const QString folder = QString::fromStdString(c.model.checkpoint).trimmed();
  model_folder_->setFolder(folder);
  shape_section_->setVisible(folder.isEmpty());
  random_weights_->setEnabled(!folder.isEmpty());
  reference_->setPlaceholderText(folder.isEmpty() || c.model.random_weights
                                     ? tr("The starting weights (a fresh model: its initial weights)")
                                     : tr("Same as the model folder: %1").arg(folder));
  // (Open where a critic setting has a problem, which validation reports with GANPO off too.)
  ganpo_section_->setEnabled(c.ganpo.enabled ||
                             std::any_of(problems_.begin(), problems_.end(),
                                         [](const QString& p) { return p.startsWith(QLatin1String("ganpo.")); }));
  const bool epochs = length_mode_->currentIndex() == kTrainForEpochs;
  max_steps_->setEnabled(!epochs);
  epochs_->setEnabled(epochs);

  const std::optional<ModelShape> shape = fresh_model_shape(c.model);
  if (!shape) {
    resolved_shape_->setText(tr("Resolved shape: none, model.arch names no model family"));
    return;
  }
  const ModelShape& s = *shape;
  resolved_shape_->setText(tr("Resolved shape: %1, d_model %2, %3 layers, %4 heads (%5 key/value), d_ff %6, "
                              "%7 positions; %8 parameters with the byte tokenizer")
                               .arg(QString::fromStdString(s.arch))
                               .arg(s.d_model)
                               .arg(s.n_layers)
                               .arg(s.n_heads)
                               .arg(s.n_kv_heads)
                               .arg(s.d_ff)
                               .arg(s.max_seq_len)
                               .arg(format_count(parameter_count(s))));
}

}  // namespace ganpo::ui
