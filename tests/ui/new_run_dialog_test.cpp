// The New Run dialog: per-field validation, TOML round trips, the built-in presets, the JSONL
// preview on its worker thread, the live memory estimate, and a screenshot for a visual check
// (written to $GANPO_SCREENSHOT_DIR when that is set).
#include "ui/new_run_dialog.h"

#include <gtest/gtest.h>

#include <QApplication>
#include <QComboBox>
#include <QDialogButtonBox>
#include <QDir>
#include <QElapsedTimer>
#include <QFile>
#include <QImage>
#include <QCheckBox>
#include <QLabel>
#include <QScrollArea>
#include <QLineEdit>
#include <QMessageBox>
#include <QPixmap>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QTabWidget>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QThread>
#include <QTimer>

#include <functional>

#include "core/checkpoint.h"
#include "core/config.h"
#include "core/error.h"
#include "core/model/lora_adapter.h"
#include "core/model/model_shape.h"
#include "ui/config_form.h"
#include "ui/dataset_preview.h"
#include "ui/model_folder_panel.h"
#include "ui/run_presets.h"
#include "screenshot_test_support.h"

namespace ganpo::ui {
namespace {

bool wait_until(const std::function<bool()>& done, int timeout_ms = 15000) {
  QElapsedTimer timer;
  timer.start();
  while (!done()) {
    if (timer.elapsed() > timeout_ms) return false;
    QCoreApplication::processEvents(QEventLoop::AllEvents, 20);
    QThread::msleep(5);
  }
  return true;
}

template <class W>
W* child(const QWidget& parent, const QString& name) {
  W* w = parent.findChild<W*>(name);
  EXPECT_NE(w, nullptr) << "no child named " << name.toStdString();
  return w;
}

bool ok_enabled(const NewRunDialog& d) {
  return d.findChild<QDialogButtonBox*>()->button(QDialogButtonBox::Ok)->isEnabled();
}

// Every field away from its default, so a round trip that drops or mixes up any key fails.
RunConfig non_default_config() {
  RunConfig c;
  c.name = "round trip";
  c.stage = "preference";
  c.seed = 7;
  c.device = "cuda:1";
  c.output_dir = "/tmp/ganpo-runs/rt";
  c.model.preset = "";
  c.model.arch = "gpt2";
  c.model.d_model = 96;
  c.model.n_layers = 3;
  c.model.n_heads = 6;
  c.model.n_kv_heads = 6;
  c.model.d_ff = 200;
  c.model.max_seq_len = 300;
  c.model.rope_theta = 500000.0;
  c.model.checkpoint = "/tmp/ckpt";
  c.model.random_weights = true;
  c.model.reference = "/tmp/ref";
  c.model.save_dtype = "bfloat16";
  c.model.max_shard_mb = 1234;
  c.data.chat_template = "chatml";
  c.data.builtin = "";
  c.data.train = "/tmp/train.jsonl";
  c.data.eval = "/tmp/eval.jsonl";
  c.data.eval_fraction = 0.125;
  c.data.max_length = 256;
  c.data.max_prompt_length = 64;
  c.data.label_noise = 0.05;
  c.data.on_bad_line = "skip";
  c.data.builtin_train_size = 123;
  c.data.builtin_eval_size = 45;
  c.objective.loss_type = "simpo";
  c.objective.beta = 2.25;
  c.objective.simpo_gamma = 0.5;
  c.objective.rpo_alpha = 0.3;
  c.ganpo.enabled = false;
  c.ganpo.adv_weight = 0.25;
  c.ganpo.critic_hidden = 96;
  c.ganpo.critic_layers = 3;
  c.ganpo.critic_heads = 3;
  c.ganpo.critic_ffn_mult = 2;
  c.ganpo.critic_max_len = 512;
  c.ganpo.critic_dropout = 0.2;
  c.ganpo.critic_lr_ratio = 0.75;
  c.ganpo.ema_momentum = 0.95;
  c.ganpo.critic_mask = "response";
  c.ganpo.critic_update_every = 2;
  c.train.learning_rate = 5e-7;
  c.train.lr_scheduler_type = "cosine";
  c.train.warmup_ratio = 0.1;
  c.train.per_device_train_batch_size = 3;
  c.train.gradient_accumulation_steps = 5;
  c.train.max_steps = 777;
  c.train.num_train_epochs = 2.5;
  c.train.max_grad_norm = 0.5;
  c.train.weight_decay = 0.01;
  c.train.adam_beta1 = 0.85;
  c.train.adam_beta2 = 0.98;
  c.train.adam_epsilon = 1e-6;
  c.train.precision = "bf16";
  c.train.group_by_length = true;
  c.train.logging_steps = 3;
  c.train.eval_steps = 50;
  c.train.save_steps = 60;
  c.train.num_threads = 2;
  c.sampling.every_steps = 25;
  c.sampling.num_prompts = 4;
  c.sampling.temperature = 1.3;
  c.sampling.top_p = 0.9;
  c.sampling.top_k = 40;
  c.sampling.max_new_tokens = 32;
  return c;
}

TEST(NewRunDialog, TitleAndDefaultsAreValid) {
  NewRunDialog dialog;
  EXPECT_EQ(dialog.windowTitle(), QStringLiteral("New Run"));
  EXPECT_TRUE(dialog.problems().isEmpty()) << dialog.problems().join('\n').toStdString();
  EXPECT_TRUE(ok_enabled(dialog));
  EXPECT_EQ(config_to_toml(dialog.config()), config_to_toml(RunConfig{}));
}

TEST(NewRunDialog, BadBetaShowsTheReasonBesideTheFieldAndDisablesOk) {
  NewRunDialog dialog;
  auto* beta = child<QLineEdit>(dialog, "objective.beta");
  auto* reason = child<QLabel>(dialog, "objective.beta.error");
  ASSERT_TRUE(beta && reason);

  beta->setText("-1");
  EXPECT_FALSE(reason->isHidden());
  EXPECT_TRUE(reason->text().contains("must be > 0, got -1")) << reason->text().toStdString();
  EXPECT_FALSE(ok_enabled(dialog));
  ASSERT_EQ(dialog.problems().size(), 1);
  EXPECT_TRUE(dialog.problems().front().startsWith("objective.beta must be > 0"));
  EXPECT_TRUE(child<QLabel>(dialog, "problemSummary")->text().startsWith("1 problem to fix"));
  EXPECT_TRUE(child<QLabel>(dialog, "problemSummary")->text().contains("objective.beta"));
  auto* tabs = dialog.findChild<QTabWidget*>();
  EXPECT_EQ(tabs->tabText(2), QStringLiteral("Objective (1)"));

  beta->setText("0.2");
  EXPECT_TRUE(reason->isHidden());
  EXPECT_TRUE(reason->text().isEmpty());
  EXPECT_TRUE(ok_enabled(dialog));
  EXPECT_TRUE(dialog.problems().isEmpty());
  EXPECT_EQ(dialog.config().objective.beta, 0.2);
  EXPECT_EQ(tabs->tabText(2), QStringLiteral("Objective"));
}

TEST(NewRunDialog, TextThatIsNotANumberAndOutOfRangeLearningRate) {
  NewRunDialog dialog;
  auto* lr = child<QLineEdit>(dialog, "train.learning_rate");
  auto* reason = child<QLabel>(dialog, "train.learning_rate.error");
  ASSERT_TRUE(lr && reason);

  lr->setText("abc");
  EXPECT_TRUE(reason->text().contains("must be a number, got \"abc\"")) << reason->text().toStdString();
  EXPECT_FALSE(ok_enabled(dialog));
  lr->setText("0");
  EXPECT_TRUE(reason->text().contains("must be > 0")) << reason->text().toStdString();
  EXPECT_FALSE(ok_enabled(dialog));
  lr->setText("3e-4");
  EXPECT_TRUE(reason->isHidden());
  EXPECT_TRUE(ok_enabled(dialog));
  EXPECT_EQ(dialog.config().train.learning_rate, 3e-4);
}

TEST(NewRunDialog, CrossFieldMessagesGoToTheFieldTheyName) {
  NewRunDialog dialog;
  child<QLineEdit>(dialog, "data.max_prompt_length")->setText("230");
  EXPECT_TRUE(child<QLabel>(dialog, "data.max_prompt_length.error")->text().contains("must be < data.max_length"));
  EXPECT_FALSE(ok_enabled(dialog));
  child<QLineEdit>(dialog, "data.max_length")->setText("250");
  EXPECT_TRUE(ok_enabled(dialog)) << dialog.problems().join('\n').toStdString();

  // Longer than the tiny preset's 256 positions: the trainer would refuse it at start.
  child<QLineEdit>(dialog, "data.max_length")->setText("1000");
  EXPECT_TRUE(child<QLabel>(dialog, "data.max_length.error")->text().contains("max_seq_len (256)"));
  EXPECT_FALSE(ok_enabled(dialog));
  child<QLineEdit>(dialog, "model.max_seq_len")->setText("1024");
  EXPECT_TRUE(ok_enabled(dialog)) << dialog.problems().join('\n').toStdString();
}

// A config with [[pipeline]] stages says so above the pages, creates that many runs, keeps its
// stages through edits, and can drop them to train its own stage alone.
TEST(NewRunDialog, APipelineIsShownAndCanBeDropped) {
  NewRunDialog dialog;
  dialog.show();
  ASSERT_TRUE(dialog.selectPreset("demo"));
  auto* summary = child<QLabel>(dialog, "pipelineSummary");
  ASSERT_TRUE(summary && summary->isVisible());
  EXPECT_TRUE(summary->text().contains("<b>sft</b>")) << summary->text().toStdString();
  EXPECT_TRUE(summary->text().contains("train.max_steps=520")) << summary->text().toStdString();
  auto* ok = dialog.findChild<QDialogButtonBox*>()->button(QDialogButtonBox::Ok);
  EXPECT_EQ(ok->text(), QStringLiteral("Create 2 runs"));
  child<QLineEdit>(dialog, "train.max_steps")->setText("77");
  RunConfig c = dialog.config();
  EXPECT_EQ(c.train.max_steps, 77);
  EXPECT_EQ(c.pipeline.size(), 1u) << "edits keep the stages";
  // A stage whose settings make an invalid run is a problem of the dialog, named.
  RunConfig bad = c;
  bad.pipeline[0].assignments.push_back("train.learning_rate=-1");
  dialog.setConfig(bad);
  EXPECT_FALSE(ok_enabled(dialog));
  EXPECT_TRUE(dialog.problems().join('\n').contains("pipeline stage \"sft\": train.learning_rate"))
      << dialog.problems().join('\n').toStdString();
  dialog.setConfig(c);
  child<QPushButton>(dialog, "dropPipeline")->click();
  EXPECT_TRUE(dialog.config().pipeline.empty());
  EXPECT_EQ(dialog.config().train.max_steps, 77) << "the form's values stay";
  EXPECT_FALSE(summary->isVisible());
  EXPECT_EQ(ok->text(), QStringLiteral("Create run"));
}

TEST(NewRunDialog, SetConfigThenConfigRoundTripsEveryKey) {
  NewRunDialog dialog;
  const RunConfig steps = non_default_config();
  dialog.setConfig(steps);
  EXPECT_EQ(config_to_toml(dialog.config()), config_to_toml(steps));
  // Valid values; only the folders and files it names are not there.
  QStringList keys;
  for (const QString& p : dialog.problems()) keys << problem_key(p);
  EXPECT_EQ(keys, (QStringList{"model.checkpoint", "model.reference", "data.train", "data.eval"}))
      << dialog.problems().join('\n').toStdString();

  RunConfig epochs = non_default_config();
  epochs.train.max_steps = -1;
  dialog.setConfig(epochs);
  EXPECT_EQ(child<QComboBox>(dialog, "lengthMode")->currentIndex(), 1);
  EXPECT_EQ(config_to_toml(dialog.config()), config_to_toml(epochs));
}

TEST(NewRunDialog, SavesAndLoadsTomlFiles) {
  QTemporaryDir dir;
  ASSERT_TRUE(dir.isValid());
  const QString path = dir.filePath("saved.toml");
  const RunConfig original = non_default_config();
  {
    NewRunDialog dialog;
    dialog.setConfig(original);
    ASSERT_TRUE(dialog.saveConfigFile(path));
  }
  EXPECT_EQ(config_to_toml(load_config_file(path.toStdString())), config_to_toml(original));
  NewRunDialog loader;
  ASSERT_TRUE(loader.loadConfigFile(path));
  EXPECT_EQ(config_to_toml(loader.config()), config_to_toml(original));
}

TEST(NewRunDialog, LoadingABadFileShowsTheMessageAndKeepsTheForm) {
  QTemporaryDir dir;
  const QString path = dir.filePath("bad.toml");
  QFile file(path);
  ASSERT_TRUE(file.open(QIODevice::WriteOnly));
  file.write("[train]\nlearning_rat = 1e-4\n");
  file.close();

  NewRunDialog dialog;
  dialog.setConfig(non_default_config());
  QString shown;
  QTimer closer;
  QObject::connect(&closer, &QTimer::timeout, [&]() {
    if (auto* box = qobject_cast<QMessageBox*>(QApplication::activeModalWidget())) {
      shown = box->text();
      box->reject();
    }
  });
  closer.start(20);
  EXPECT_FALSE(dialog.loadConfigFile(path));
  closer.stop();
  EXPECT_TRUE(shown.contains("learning_rat")) << shown.toStdString();
  EXPECT_TRUE(shown.contains("did you mean")) << shown.toStdString();
  EXPECT_EQ(config_to_toml(dialog.config()), config_to_toml(non_default_config()));
}

TEST(NewRunDialog, EveryBuiltInPresetLoadsWithoutProblems) {
  const QStringList stems = NewRunDialog::presetFileStems();
  ASSERT_GE(stems.size(), 3);
  EXPECT_EQ(stems.mid(0, 3), (QStringList{"demo", "paper-gemma2-2b-ganpo", "paper-llama3-8b-ganpo"}));
  EXPECT_EQ(run_preset_title("demo"), QStringLiteral("Demo (CPU, minutes)"));
  EXPECT_EQ(run_preset_title("paper-gemma2-2b-ganpo"), QStringLiteral("Paper: Gemma-2-2B-it GANPO"));
  EXPECT_EQ(run_preset_title("paper-llama3-8b-ganpo"), QStringLiteral("Paper: Llama-3-8B GANPO"));

  NewRunDialog dialog;
  auto* combo = child<QComboBox>(dialog, "preset");
  for (const QString& stem : stems) {
    SCOPED_TRACE(stem.toStdString());
    ASSERT_TRUE(dialog.selectPreset(stem));
    // The paper presets name placeholders for the model folder and the pairs, which are not
    // there until the researcher puts them there: those two problems and no other.
    QStringList keys;
    for (const QString& p : dialog.problems()) keys << problem_key(p);
    if (stem.startsWith("paper-")) {
      EXPECT_EQ(keys, (QStringList{"model.checkpoint", "data.train"})) << dialog.problems().join('\n').toStdString();
    } else {
      EXPECT_TRUE(dialog.problems().isEmpty()) << dialog.problems().join('\n').toStdString();
      EXPECT_TRUE(ok_enabled(dialog));
    }
    EXPECT_EQ(config_to_toml(dialog.config()), config_to_toml(load_run_preset(stem)));
    EXPECT_EQ(combo->currentData().toString(), stem);
  }
  EXPECT_FALSE(dialog.selectPreset("no-such-preset"));

  // Numbers read as a config file writes them, whatever the locale.
  ASSERT_TRUE(dialog.selectPreset("paper-gemma2-2b-ganpo"));
  EXPECT_EQ(child<QLineEdit>(dialog, "train.learning_rate")->text(), QStringLiteral("5e-7"));
  EXPECT_EQ(child<QLineEdit>(dialog, "model.rope_theta")->text(), QStringLiteral("10000"));
  EXPECT_EQ(child<QComboBox>(dialog, "lengthMode")->currentIndex(), 1);  // 1 epoch, max_steps -1
}

TEST(NewRunDialog, DatasetPreviewCountsPairsAndListsBadLines) {
  QTemporaryDir dir;
  const QString path = dir.filePath("pairs.jsonl");
  QFile file(path);
  ASSERT_TRUE(file.open(QIODevice::WriteOnly));
  file.write(R"({"prompt": "2+2=", "chosen": "4", "rejected": "5"})" "\n"
             R"({"prompt": "broken", "chosen": )" "\n"
             R"({"prompt": "sky?", "chosen": "blue", "rejected": "green"})" "\n");
  file.close();

  NewRunDialog dialog;
  RunConfig c;
  c.data.builtin = "";
  c.data.train = path.toStdString();
  dialog.setConfig(c);

  auto* summary = child<QLabel>(dialog, "datasetPreview.summary");
  auto* table = child<QTableWidget>(dialog, "datasetPreview.table");
  auto* bad_lines = child<QPlainTextEdit>(dialog, "datasetPreview.badLines");
  ASSERT_TRUE(summary && table && bad_lines);
  ASSERT_TRUE(wait_until([&]() { return summary->text().contains("parse"); })) << summary->text().toStdString();
  EXPECT_TRUE(summary->text().startsWith("2 pairs parse")) << summary->text().toStdString();
  EXPECT_EQ(table->rowCount(), 2);
  EXPECT_EQ(table->columnCount(), 3);
  EXPECT_EQ(table->item(1, 1)->text(), QStringLiteral("blue"));
  EXPECT_TRUE(bad_lines->toPlainText().startsWith("line 2:")) << bad_lines->toPlainText().toStdString();
  EXPECT_FALSE(bad_lines->toPlainText().contains("line 1:"));
  EXPECT_FALSE(bad_lines->toPlainText().contains("line 3:"));
}

// A JSON array's bad rows are named by element, as the trainer's error names them: the
// element's index is not the line it sits on in a pretty-printed file.
TEST(NewRunDialog, DatasetPreviewNamesAJsonArraysBadRowsByElement) {
  QTemporaryDir dir;
  const QString path = dir.filePath("pairs.json");
  QFile file(path);
  ASSERT_TRUE(file.open(QIODevice::WriteOnly));
  file.write("[\n"
             "  {\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"},\n"
             "  {\n"
             "    \"prompt\": \"d\",\n"
             "    \"chosen\": \"e\"\n"
             "  }\n"
             "]\n");
  file.close();
  const DatasetPreview p = read_dataset_preview(path, true, 5);
  ASSERT_EQ(p.bad_lines.size(), 1u);
  EXPECT_TRUE(p.json_array);

  NewRunDialog dialog;
  RunConfig c;
  c.data.builtin = "";
  c.data.train = path.toStdString();
  dialog.setConfig(c);
  auto* summary = child<QLabel>(dialog, "datasetPreview.summary");
  auto* bad_lines = child<QPlainTextEdit>(dialog, "datasetPreview.badLines");
  ASSERT_TRUE(wait_until([&]() { return summary->text().contains("parse"); })) << summary->text().toStdString();
  EXPECT_TRUE(bad_lines->toPlainText().startsWith("element 2: missing key \"rejected\""))
      << bad_lines->toPlainText().toStdString();
}

// A model folder as checkpoints are written (a fresh tiny Llama with the byte tokenizer), so
// the dialog has a real folder to describe.
QString write_model_folder(const QTemporaryDir& dir) {
  const QString folder = dir.filePath("model");
  ModelConfig mc;
  mc.preset = "tiny";
  ByteTokenizer tok;
  CausalLM model(resolve_model_shape(mc, tok.vocab_size()));
  save_model_files(folder.toStdString(), model, tok);
  return folder;
}

// What a run would stop at in its training file is a problem of the dialog, beside the field
// that fixes it: bad lines while data.on_bad_line stops the run at the first, and conversational
// rows for a model folder whose tokenizer has no chat template. OK is disabled until then.
TEST(NewRunDialog, DataTheRunWouldStopAtDisablesOk) {
  QTemporaryDir dir;
  const QString path = dir.filePath("pairs.jsonl");
  QFile file(path);
  ASSERT_TRUE(file.open(QIODevice::WriteOnly));
  file.write(R"({"prompt": "2+2=", "chosen": "4", "rejected": "5"})" "\n"
             R"({"prompt": "broken", "chosen": )" "\n");
  file.close();

  NewRunDialog dialog;
  RunConfig c;
  c.data.builtin = "";
  c.data.train = path.toStdString();
  c.data.on_bad_line = "error";
  dialog.setConfig(c);
  auto* summary = child<QLabel>(dialog, "datasetPreview.summary");
  ASSERT_TRUE(wait_until([&]() { return summary->text().contains("parse"); })) << summary->text().toStdString();
  QCoreApplication::processEvents();
  EXPECT_FALSE(ok_enabled(dialog)) << "the run would stop at line 2";
  auto* reason = child<QLabel>(dialog, "data.on_bad_line.error");
  EXPECT_TRUE(reason->text().contains("line 2")) << reason->text().toStdString();
  auto* on_bad_line = child<QComboBox>(dialog, "data.on_bad_line");
  on_bad_line->setCurrentIndex(on_bad_line->findData(QStringLiteral("skip")));
  EXPECT_TRUE(ok_enabled(dialog)) << dialog.problems().join('\n').toStdString();

  // A model folder whose Hugging Face tokenizer has no chat template, and conversational rows.
  const QString folder = write_model_folder(dir);
  {
    QFile config(folder + "/tokenizer_config.json");  // the byte tokenizer's files, read as a HF tokenizer
    ASSERT_TRUE(config.open(QIODevice::WriteOnly | QIODevice::Truncate));
    config.write(R"({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>"})");
  }
  const QString chat = dir.filePath("chat.jsonl");
  QFile chat_file(chat);
  ASSERT_TRUE(chat_file.open(QIODevice::WriteOnly));
  chat_file.write(R"({"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "assistant", "content": "Go away."}]})" "\n");
  chat_file.close();
  c.data.on_bad_line = "error";
  c.data.train = chat.toStdString();
  c.model.checkpoint = folder.toStdString();
  dialog.setConfig(c);
  auto* caption = child<QLabel>(dialog, "datasetPreview.tokensCaption");
  ASSERT_TRUE(wait_until([&]() { return caption->text().contains("chat template"); }, 30000)) << caption->text().toStdString();
  QCoreApplication::processEvents();
  EXPECT_FALSE(ok_enabled(dialog)) << "the run would stop: no chat template for conversational rows";
  auto* template_reason = child<QLabel>(dialog, "data.chat_template.error");
  EXPECT_TRUE(template_reason->text().contains("no chat template")) << template_reason->text().toStdString();
  child<QComboBox>(dialog, "data.chat_template")->setCurrentText(QStringLiteral("chatml"));
  ASSERT_TRUE(wait_until([&]() { return caption->text().contains("Row 1"); }, 30000)) << caption->text().toStdString();
  QCoreApplication::processEvents();
  EXPECT_TRUE(ok_enabled(dialog)) << dialog.problems().join('\n').toStdString();
}

TEST(NewRunDialog, ModelPageDescribesTheFolderAndTheReferenceDefaultsToIt) {
  QTemporaryDir dir;
  const QString folder = write_model_folder(dir);
  NewRunDialog dialog;
  auto* panel = child<QLabel>(dialog, "modelFolderPanel.text");
  ASSERT_TRUE(panel);
  EXPECT_TRUE(panel->text().contains("fresh model")) << panel->text().toStdString();
  auto* shape_field = child<QLineEdit>(dialog, "model.d_model");
  auto* reference = child<QLineEdit>(dialog, "model.reference");
  dialog.show();
  EXPECT_TRUE(shape_field->isVisibleTo(&dialog));

  child<QLineEdit>(dialog, "model.checkpoint")->setText(folder);
  ASSERT_TRUE(wait_until([&]() { return panel->text().contains("architecture"); }, 30000)) << panel->text().toStdString();
  EXPECT_TRUE(panel->text().contains("LlamaForCausalLM")) << panel->text().toStdString();
  EXPECT_TRUE(panel->text().contains("tokenizer")) << panel->text().toStdString();
  EXPECT_FALSE(shape_field->isVisibleTo(&dialog)) << "the folder's config.json decides the shape";
  EXPECT_TRUE(reference->placeholderText().contains(folder)) << reference->placeholderText().toStdString();
  EXPECT_TRUE(dialog.config().model.reference.empty()) << "empty = the model folder, nothing stored";
  EXPECT_TRUE(child<QLabel>(dialog, "memoryEstimate")->text().contains("parameters"));

  // A PEFT adapter folder over it: described, and the panel says a run cannot start from it.
  const QString adapter = dir.filePath("adapter");
  {
    CausalLM model = load_model(folder.toStdString());
    LoraSpec spec;
    spec.r = 2;
    spec.targets = {"q_proj"};
    model->add_lora(spec);
    QDir().mkpath(adapter);
    save_peft_adapter(adapter.toStdString(), model, folder.toStdString());
  }
  child<QLineEdit>(dialog, "model.checkpoint")->setText(adapter);
  ASSERT_TRUE(wait_until([&]() { return panel->text().contains("PEFT adapter folder"); })) << panel->text().toStdString();
  EXPECT_TRUE(panel->text().contains("LoRA r 2")) << panel->text().toStdString();
  EXPECT_TRUE(panel->text().contains("LlamaForCausalLM")) << panel->text().toStdString();

  child<QLineEdit>(dialog, "model.checkpoint")->setText(dir.filePath("nothing-here"));
  ASSERT_TRUE(wait_until([&]() { return panel->text().contains("no folder"); })) << panel->text().toStdString();
}

// A folder whose weights cannot be loaded (here: no safetensors files) is a problem of
// model.checkpoint, which the run would stop at, unless the run trains its architecture from
// random weights.
TEST(NewRunDialog, AFolderWithoutLoadableWeightsNeedsRandomWeights) {
  QTemporaryDir dir;
  const QString folder = write_model_folder(dir);
  ASSERT_TRUE(QFile::remove(folder + "/model.safetensors"));
  NewRunDialog dialog;
  auto* panel = dialog.findChild<ModelFolderPanel*>();
  ASSERT_TRUE(panel);
  child<QLineEdit>(dialog, "model.checkpoint")->setText(folder);
  ASSERT_TRUE(wait_until([&] { return !panel->isReading() && panel->text().contains("architecture"); }))
      << panel->text().toStdString();
  EXPECT_FALSE(ok_enabled(dialog)) << "a run would stop: there are no weights to load";
  EXPECT_TRUE(dialog.problems().join('\n').contains("model.safetensors")) << dialog.problems().join('\n').toStdString();
  child<QCheckBox>(dialog, "model.random_weights")->setChecked(true);
  EXPECT_TRUE(ok_enabled(dialog)) << dialog.problems().join('\n').toStdString();
}

TEST(NewRunDialog, DatasetPreviewShowsTheRowTokenizedWithThePromptBoundary) {
  QTemporaryDir dir;
  const QString path = dir.filePath("pairs.jsonl");
  QFile file(path);
  ASSERT_TRUE(file.open(QIODevice::WriteOnly));
  file.write(R"({"prompt": "2+2=", "chosen": "4", "rejected": "five"})" "\n");
  file.close();

  // The worker function: byte tokenizer, [BOS] prompt "\n" | response [EOS].
  PreviewTokenizing how;
  how.max_length = 512;
  how.max_prompt_length = 128;
  DatasetPreview p = read_dataset_preview(path, true, 5, how);
  ASSERT_TRUE(p.tokenizing_error.isEmpty()) << p.tokenizing_error.toStdString();
  ASSERT_EQ(p.tokenized.size(), 1u);
  EXPECT_EQ(p.tokenized[0].prompt, (QStringList{"<bos>", "2", "+", "2", "=", "\n"}));
  EXPECT_EQ(p.tokenized[0].chosen, (QStringList{"4", "<eos>"}));
  EXPECT_EQ(p.tokenized[0].rejected.size(), 5);
  EXPECT_EQ(p.tokenized[0].prompt_dropped, 0);
  // Truncation as training does it: the prompt keeps its end.
  how.max_length = 6;
  how.max_prompt_length = 3;
  p = read_dataset_preview(path, true, 5, how);
  EXPECT_EQ(p.tokenized[0].prompt, (QStringList{"2", "=", "\n"}));
  EXPECT_EQ(p.tokenized[0].prompt_dropped, 3);
  EXPECT_EQ(p.tokenized[0].rejected_dropped, 2);
  // A model folder without a usable tokenizer says so.
  how.model_folder = dir.filePath("nothing-here");
  p = read_dataset_preview(path, true, 5, how);
  EXPECT_TRUE(p.tokenizing_error.contains("tokenizer")) << p.tokenizing_error.toStdString();
  EXPECT_EQ(p.first_rows.size(), 1u) << "the rows are still shown";

  // In the dialog: the tokens with the boundary mark and the counts.
  NewRunDialog dialog;
  RunConfig c;
  c.data.builtin = "";
  c.data.train = path.toStdString();
  dialog.setConfig(c);
  auto* caption = child<QLabel>(dialog, "datasetPreview.tokensCaption");
  ASSERT_TRUE(wait_until([&]() { return caption->text().contains("Row 1"); })) << caption->text().toStdString();
  const QString html = dialog.findChild<DatasetPreviewWidget*>()->tokensHtml();
  EXPECT_TRUE(html.contains(QStringLiteral("┃"))) << "the prompt / completion boundary is marked";
  EXPECT_TRUE(html.contains("prompt 6 tokens")) << html.toStdString();
  EXPECT_TRUE(caption->text().contains("byte tokenizer")) << caption->text().toStdString();
}

TEST(NewRunDialog, MemoryEstimateFollowsTheBatchSize) {
  NewRunDialog dialog;
  ASSERT_TRUE(dialog.selectPreset("demo"));
  auto* memory = child<QLabel>(dialog, "memoryEstimate");
  auto* batch = child<QLineEdit>(dialog, "train.per_device_train_batch_size");
  ASSERT_TRUE(memory && batch);
  const QString before = memory->text();
  EXPECT_TRUE(before.contains("0.89M parameters")) << before.toStdString();
  batch->setText("64");
  EXPECT_NE(memory->text(), before);
  EXPECT_TRUE(memory->text().contains("0.89M parameters"));
  batch->setText("16");
  EXPECT_EQ(memory->text(), before);
  // A batch no machine holds (~1.4 TB of activations): said in red, against the device's memory.
  batch->setText("100000");
  EXPECT_TRUE(memory->text().contains("More than the")) << memory->text().toStdString();
  EXPECT_TRUE(memory->styleSheet().contains("color")) << "said in red";
  EXPECT_TRUE(memory->text().contains("(train.auto_find_batch_size = true does that where memory runs out)"))
      << memory->text().toStdString();
  // Finding the batch on its own: said once, no longer proposed.
  auto* finds = child<QCheckBox>(dialog, "train.auto_find_batch_size");
  ASSERT_TRUE(finds);
  finds->setChecked(true);
  EXPECT_FALSE(memory->text().contains("train.auto_find_batch_size = true")) << memory->text().toStdString();
  EXPECT_TRUE(memory->text().contains("the run lowers its batch where an allocation fails")) << memory->text().toStdString();
  dialog.show();
  testing::save_for_review(dialog.grab().toImage(), QStringLiteral("new_run_dialog_memory_short_finding.png"));
  finds->setChecked(false);
  testing::save_for_review(dialog.grab().toImage(), QStringLiteral("new_run_dialog_memory_short.png"));
  // Processes on the CPU share its RAM, each with its own models: fewer of them is a way out.
  auto* processes = child<QLineEdit>(dialog, "train.num_processes");
  ASSERT_TRUE(processes);
  processes->setText("2");
  if (memory->text().contains("the RAM free on this machine")) {  // (not where a GPU is found: one each)
    EXPECT_TRUE(memory->text().contains("for 2 processes")) << memory->text().toStdString();
    EXPECT_TRUE(memory->text().contains("or run fewer processes (train.num_processes, now 2: each holds its own copy "
                                        "of the models in this machine's RAM)"))
        << memory->text().toStdString();
  }
  testing::save_for_review(dialog.grab().toImage(), QStringLiteral("new_run_dialog_memory_short_processes.png"));
  processes->setText("1");
  batch->setText("16");
  EXPECT_EQ(memory->text(), before);
  EXPECT_TRUE(memory->styleSheet().isEmpty());
  // Held-out evaluations at a batch of their own that no machine holds: the evaluation is the
  // peak, and the way out is its batch.
  auto* eval_batch = child<QLineEdit>(dialog, "train.per_device_eval_batch_size");
  ASSERT_TRUE(eval_batch);
  eval_batch->setText("100000");
  EXPECT_TRUE(memory->text().contains("at its peak in the held-out evaluations, whose passes (a batch of 100000)"))
      << memory->text().toStdString();
  EXPECT_TRUE(memory->text().contains("lower train.per_device_eval_batch_size (now 100000")) << memory->text().toStdString();
  testing::save_for_review(dialog.grab().toImage(), QStringLiteral("new_run_dialog_memory_short_evaluation.png"));
  eval_batch->setText("0");
  EXPECT_EQ(memory->text(), before);
}

// What the run would refuse at its start is a problem before it: a model folder or a data file
// that is not there; and a model.arch no fresh model has is a problem, not an exception (it threw
// from the shape on the keystroke after loading such a file, out of a signal: the end of the
// program).
TEST(NewRunDialog, MissingInputsAndAnUnknownArchitectureAreProblemsNotCrashes) {
  NewRunDialog dialog;
  ASSERT_TRUE(dialog.selectPreset("paper-gemma2-2b-ganpo"));
  EXPECT_FALSE(ok_enabled(dialog));
  auto* folder_reason = child<QLabel>(dialog, "model.checkpoint.error");
  auto* train_reason = child<QLabel>(dialog, "data.train.error");
  ASSERT_TRUE(folder_reason && train_reason);
  EXPECT_TRUE(folder_reason->text().contains("there is no folder at gemma-2-2b-it")) << folder_reason->text().toStdString();
  EXPECT_TRUE(train_reason->text().contains("there is no file at ultrafeedback_binarized.jsonl"))
      << train_reason->text().toStdString();
  EXPECT_TRUE(child<QLabel>(dialog, "problemSummary")->text().startsWith("2 problems to fix"));

  QTemporaryDir dir;
  const QString pairs = dir.filePath("pairs.jsonl");
  QFile file(pairs);
  ASSERT_TRUE(file.open(QIODevice::WriteOnly));
  file.write(R"({"prompt": "2+2=", "chosen": "4", "rejected": "5"})" "\n");
  file.close();
  child<QLineEdit>(dialog, "data.train")->setText(pairs);
  EXPECT_EQ(dialog.problems().size(), 1) << dialog.problems().join('\n').toStdString();
  child<QLineEdit>(dialog, "model.checkpoint")->setText(write_model_folder(dir));
  auto* panel = dialog.findChild<ModelFolderPanel*>();
  ASSERT_TRUE(panel);
  ASSERT_TRUE(wait_until([&] { return !panel->isReading(); }));
  EXPECT_TRUE(dialog.problems().isEmpty()) << dialog.problems().join('\n').toStdString();
  EXPECT_TRUE(ok_enabled(dialog));
  // A folder whose config.json the loader refuses: its message is model.checkpoint's problem
  // once read (the panel showed it in red while the dialog said Ready).
  QTemporaryDir broken;
  QFile config(broken.filePath("config.json"));
  ASSERT_TRUE(config.open(QIODevice::WriteOnly));
  config.write("{\"model_type\": \"llama\"");
  config.close();
  child<QLineEdit>(dialog, "model.checkpoint")->setText(broken.path());
  ASSERT_TRUE(wait_until([&] { return !panel->isReading(); }));
  ASSERT_EQ(dialog.problems().size(), 1) << dialog.problems().join('\n').toStdString();
  EXPECT_EQ(problem_key(dialog.problems().front()), QStringLiteral("model.checkpoint"));
  EXPECT_FALSE(ok_enabled(dialog));

  RunConfig gemma = load_run_preset("demo");
  gemma.model.arch = "gemma";
  EXPECT_NO_THROW(dialog.setConfig(gemma));
  ASSERT_FALSE(dialog.problems().isEmpty());
  EXPECT_TRUE(dialog.problems().front().startsWith("model.arch must be one of")) << dialog.problems().join('\n').toStdString();
  EXPECT_NO_THROW(child<QLineEdit>(dialog, "train.learning_rate")->setText("1e-4"));  // the next keystroke
  EXPECT_TRUE(child<QLabel>(dialog, "memoryEstimate")->text().startsWith("No estimate")) << child<QLabel>(dialog, "memoryEstimate")->text().toStdString();
  EXPECT_FALSE(ok_enabled(dialog));
  EXPECT_THROW(resolve_model_shape(gemma.model, 259), ConfigError);
}

// "auto" trains on the file named below it, so that field shows while the built-in task is what
// auto picks (it was hidden until a file was named, which could not be done); a built-in task
// with a file still named shows the file, which its problem asks to remove.
TEST(NewRunDialog, TheFilesSectionShowsWhereItsFieldsMatter) {
  NewRunDialog dialog;
  ASSERT_TRUE(dialog.selectPreset("demo"));
  dialog.show();
  dialog.findChild<QTabWidget*>()->setCurrentIndex(1);  // Data
  auto* source = child<QComboBox>(dialog, "data.builtin");
  auto* train = child<QLineEdit>(dialog, "data.train");
  ASSERT_TRUE(source && train);
  auto shows = [&](QWidget* w) { return w->isVisibleTo(&dialog); };
  source->setCurrentIndex(source->findData("auto"));
  train->clear();
  EXPECT_TRUE(shows(train)) << "auto: the file it would read";
  source->setCurrentIndex(source->findData("lists"));
  EXPECT_FALSE(shows(train)) << "the built-in task alone";
  train->setText("/nowhere/pairs.jsonl");
  EXPECT_TRUE(shows(train)) << "a file the task refuses, to clear";
}

// LoRA on the Model page: the estimate counts only the adapters' gradients and AdamW moments,
// holds no reference copy, and says how many parameters train.
TEST(NewRunDialog, MemoryEstimateKnowsLora) {
  QTemporaryDir dir;
  NewRunDialog dialog;
  ASSERT_TRUE(dialog.selectPreset("demo"));
  child<QLineEdit>(dialog, "model.checkpoint")->setText(write_model_folder(dir));
  auto* memory = child<QLabel>(dialog, "memoryEstimate");
  auto* rank = child<QLineEdit>(dialog, "model.lora.r");
  ASSERT_TRUE(memory && rank);
  const QString full = memory->text();
  EXPECT_FALSE(full.contains("LoRA")) << full.toStdString();
  rank->setText("8");
  const QString lora = memory->text();
  EXPECT_TRUE(lora.contains("LoRA trains")) << lora.toStdString();
  EXPECT_TRUE(lora.contains("the reference is the model with its adapters off")) << lora.toStdString();
  EXPECT_NE(lora, full);
  EXPECT_TRUE(dialog.config().model.lora.r == 8);
  // A name this model has no projection of (GPT-2's c_attn on a Llama folder): a problem beside
  // the field, before the run would stop on it, naming the model's own projections.
  auto* targets = child<QComboBox>(dialog, "model.lora.target_modules");
  ASSERT_TRUE(targets);
  targets->setCurrentText("c_attn");
  auto* reason = child<QLabel>(dialog, "model.lora.target_modules.error");
  ASSERT_TRUE(reason);
  EXPECT_TRUE(reason->text().contains("which this llama model does not have")) << reason->text().toStdString();
  EXPECT_TRUE(reason->text().contains("q_proj")) << reason->text().toStdString();
  EXPECT_EQ(dialog.problems().size(), 1) << dialog.problems().join("; ").toStdString();
  dialog.show();
  if (auto* page = qobject_cast<QScrollArea*>(dialog.findChild<QTabWidget*>()->currentWidget())) page->ensureWidgetVisible(targets);
  QCoreApplication::processEvents();
  testing::save_for_review(dialog.grab().toImage(), QStringLiteral("new_run_dialog_lora_targets.png"));
  // A regular expression that matches nothing: its message reads "model.lora.target_modules, the
  // regular expression ..." and is still the field's (it showed nowhere near it).
  targets->setCurrentText(".*\\.nothing_here$");
  EXPECT_TRUE(reason->text().contains("matches no projection")) << reason->text().toStdString();
  EXPECT_FALSE(reason->text().startsWith(",")) << reason->text().toStdString();
  EXPECT_EQ(dialog.problems().size(), 1) << dialog.problems().join("; ").toStdString();
  EXPECT_TRUE(dialog.findChild<QTabWidget*>()->tabText(0).endsWith("(1)")) << dialog.findChild<QTabWidget*>()->tabText(0).toStdString();
  // The token embedding adapted too (PEFT's LoRA Embedding): more parameters train.
  targets->setCurrentText("q_proj,k_proj,v_proj,o_proj,embed_tokens");
  EXPECT_TRUE(dialog.problems().isEmpty()) << dialog.problems().join("; ").toStdString();
  EXPECT_NE(memory->text(), lora) << "the embedding's adapter trains";
  // And the output head (PEFT's LoRA Linear on lm_head).
  targets->setCurrentText("q_proj,k_proj,v_proj,o_proj,lm_head");
  EXPECT_TRUE(dialog.problems().isEmpty()) << dialog.problems().join("; ").toStdString();
  EXPECT_NE(memory->text(), lora) << "the head's adapter trains";
  targets->setCurrentText("q_proj,k_proj,v_proj,o_proj");
  EXPECT_EQ(memory->text(), lora);
  EXPECT_TRUE(dialog.problems().isEmpty()) << dialog.problems().join("; ").toStdString();
  // PEFT's per-layer settings: a layer the model lacks and a pattern without its rank are
  // reasons beside their fields; adapters on one layer train fewer parameters.
  auto* layers = child<QLineEdit>(dialog, "model.lora.layers_to_transform");
  auto* ranks = child<QLineEdit>(dialog, "model.lora.rank_pattern");
  ASSERT_TRUE(layers && ranks);
  layers->setText("99");
  auto* layers_reason = child<QLabel>(dialog, "model.lora.layers_to_transform.error");
  ASSERT_TRUE(layers_reason);
  EXPECT_TRUE(layers_reason->text().contains("names layer 99, but this model has")) << layers_reason->text().toStdString();
  if (auto* page = qobject_cast<QScrollArea*>(dialog.findChild<QTabWidget*>()->currentWidget())) page->ensureWidgetVisible(layers);
  QCoreApplication::processEvents();
  testing::save_for_review(dialog.grab().toImage(), QStringLiteral("new_run_dialog_lora_layers.png"));
  layers->setText("0");
  EXPECT_TRUE(dialog.problems().isEmpty()) << dialog.problems().join("; ").toStdString();
  EXPECT_NE(memory->text(), lora) << "adapters on one layer";
  ranks->setText("q_proj");
  auto* ranks_reason = child<QLabel>(dialog, "model.lora.rank_pattern.error");
  ASSERT_TRUE(ranks_reason);
  EXPECT_TRUE(ranks_reason->text().contains("write pattern=rank items")) << ranks_reason->text().toStdString();
  ranks->setText("q_proj=16");
  EXPECT_TRUE(dialog.problems().isEmpty()) << dialog.problems().join("; ").toStdString();
  EXPECT_EQ(dialog.config().model.lora.rank_pattern, "q_proj=16");
  layers->setText("");
  ranks->setText("");
  EXPECT_EQ(memory->text(), lora);
  // modules_to_save: a name no module ends with is a reason beside the field; the head trained
  // whole adds its copy to what trains.
  auto* whole = child<QLineEdit>(dialog, "model.lora.modules_to_save");
  ASSERT_TRUE(whole);
  whole->setText("lm_head, score");
  auto* whole_reason = child<QLabel>(dialog, "model.lora.modules_to_save.error");
  ASSERT_TRUE(whole_reason);
  EXPECT_TRUE(whole_reason->text().contains("names \"score\", and no module of this llama model has a name that ends with it"))
      << whole_reason->text().toStdString();
  QCoreApplication::processEvents();  // (the reason's label laid out first)
  if (auto* page = qobject_cast<QScrollArea*>(dialog.findChild<QTabWidget*>()->currentWidget())) page->ensureWidgetVisible(whole_reason);
  QCoreApplication::processEvents();
  testing::save_for_review(dialog.grab().toImage(), QStringLiteral("new_run_dialog_lora_modules_to_save.png"));
  whole->setText("lm_head");
  EXPECT_TRUE(dialog.problems().isEmpty()) << dialog.problems().join("; ").toStdString();
  EXPECT_NE(memory->text(), lora) << "the head's copy trains";
  whole->setText("");
  EXPECT_EQ(memory->text(), lora);
  rank->setText("0");
  EXPECT_EQ(memory->text(), full);
}

// Each page as a person sees it: the image has the dialog's size and shows content, the page
// shown is the one picked, and the widgets on it hold what the test put there.
TEST(NewRunDialog, Screenshot) {
  using testing::save_for_review;
  using testing::shows_content;
  NewRunDialog dialog;
  ASSERT_TRUE(dialog.selectPreset("demo"));
  child<QLineEdit>(dialog, "objective.beta")->setText("-1");  // one visible reason
  dialog.show();
  QCoreApplication::processEvents();
  auto* tabs = dialog.findChild<QTabWidget*>();
  ASSERT_NE(tabs, nullptr);
  ASSERT_EQ(tabs->count(), 6);
  auto* reason = child<QLabel>(dialog, "objective.beta.error");
  ASSERT_NE(reason, nullptr);
  std::vector<QImage> pages;
  for (int i = 0; i < tabs->count(); ++i) {
    tabs->setCurrentIndex(i);
    QCoreApplication::processEvents();
    const QImage shot = dialog.grab().toImage();
    EXPECT_TRUE(shows_content(shot, dialog.size())) << "page " << i;
    EXPECT_TRUE(tabs->widget(i)->isVisible()) << "page " << i << " is the one shown";
    // The bad beta's reason is on screen exactly while the Objective page is.
    EXPECT_EQ(reason->isVisible(), i == 2) << "page " << i;
    for (const QImage& earlier : pages) EXPECT_NE(shot, earlier) << "page " << i << " looks like an earlier one";
    pages.push_back(shot);
    save_for_review(shot, i == 0 ? QStringLiteral("new_run_dialog.png") : QStringLiteral("new_run_dialog_%1.png").arg(i));
  }
  EXPECT_EQ(tabs->tabText(2), QStringLiteral("Objective (1)"));
  // The Optimisation page scrolled to its Numerics section (precision, checkpointing, the
  // reference's precomputed log-probs, prefix sharing, the output head).
  tabs->setCurrentIndex(3);
  auto* sharing = child<QCheckBox>(dialog, "train.prefix_sharing");
  ASSERT_NE(sharing, nullptr);
  auto* page = qobject_cast<QScrollArea*>(tabs->widget(3));
  ASSERT_NE(page, nullptr);
  page->ensureWidgetVisible(sharing);
  QCoreApplication::processEvents();
  EXPECT_TRUE(sharing->isChecked()) << "on by default";
  EXPECT_FALSE(sharing->visibleRegion().isEmpty()) << "scrolled into view";
  // The output head's choice below it (train.chunked_logps), "auto" by default.
  auto* head = child<QComboBox>(dialog, "train.chunked_logps");
  ASSERT_NE(head, nullptr);
  page->ensureWidgetVisible(head);
  QCoreApplication::processEvents();
  EXPECT_EQ(head->currentData().toString(), QStringLiteral("auto"));
  EXPECT_FALSE(head->visibleRegion().isEmpty()) << "scrolled into view";
  save_for_review(dialog.grab().toImage(), QStringLiteral("new_run_dialog_numerics.png"));
  EXPECT_TRUE(reason->text().contains("must be > 0, got -1")) << reason->text().toStdString();

  // The Data page with a JSONL file: preview table, counts and a bad line.
  QTemporaryDir dir;
  const QString path = dir.filePath("pairs.jsonl");
  QFile file(path);
  ASSERT_TRUE(file.open(QIODevice::WriteOnly));
  file.write(R"({"prompt": "List three fruits.", "chosen": "apple, pear, plum", "rejected": "apple, apple"})" "\n"
             R"({"prompt": "oops", "chosen": 3, "rejected": "x"})" "\n"
             R"({"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "assistant", "content": "Go away."}]})" "\n");
  file.close();
  auto* source = child<QComboBox>(dialog, "data.builtin");
  source->setCurrentIndex(source->count() - 1);  // the file, after the built-in tasks
  child<QLineEdit>(dialog, "data.train")->setText(path);
  tabs->setCurrentIndex(1);
  auto* summary = child<QLabel>(dialog, "datasetPreview.summary");
  ASSERT_TRUE(wait_until([&]() { return summary->text().contains("parse"); })) << summary->text().toStdString();
  QCoreApplication::processEvents();
  auto* table = child<QTableWidget>(dialog, "datasetPreview.table");
  auto* bad_lines = child<QPlainTextEdit>(dialog, "datasetPreview.badLines");
  ASSERT_TRUE(table && bad_lines);
  EXPECT_TRUE(summary->text().startsWith("2 pairs parse; 1 bad line")) << summary->text().toStdString();
  ASSERT_EQ(table->rowCount(), 2);
  EXPECT_EQ(table->item(0, 0)->text(), QStringLiteral("List three fruits."));
  EXPECT_TRUE(bad_lines->toPlainText().startsWith("line 2:")) << bad_lines->toPlainText().toStdString();
  EXPECT_TRUE(table->isVisible());
  const QImage data_shot = dialog.grab().toImage();
  EXPECT_TRUE(shows_content(data_shot, dialog.size()));
  EXPECT_NE(data_shot, pages[1]) << "the preview is drawn";
  save_for_review(data_shot, "new_run_dialog_data_file.png");

  // Starting from a model folder ($GANPO_SCREENSHOT_MODEL, e.g. one with a real tokenizer and
  // chat template, else a fresh tiny folder): the Model page's description, and the third row
  // (conversational) rendered and tokenized on the Data page.
  QString folder = qEnvironmentVariable("GANPO_SCREENSHOT_MODEL");
  if (folder.isEmpty()) folder = write_model_folder(dir);
  auto* random_weights = child<QCheckBox>(dialog, "model.random_weights");
  ASSERT_NE(random_weights, nullptr);
  EXPECT_FALSE(random_weights->isEnabled()) << "without a model folder the model is random anyway";
  child<QLineEdit>(dialog, "model.checkpoint")->setText(folder);
  tabs->setCurrentIndex(0);
  auto* panel = child<QLabel>(dialog, "modelFolderPanel.text");
  ASSERT_TRUE(wait_until([&]() { return panel->text().contains("architecture"); }, 30000)) << panel->text().toStdString();
  QCoreApplication::processEvents();
  EXPECT_TRUE(panel->isVisible());
  const QImage model_shot = dialog.grab().toImage();
  EXPECT_TRUE(shows_content(model_shot, dialog.size()));
  EXPECT_NE(model_shot, pages[0]) << "the folder's description is drawn";
  save_for_review(model_shot, "new_run_dialog_model_folder.png");
  EXPECT_TRUE(random_weights->isEnabled());
  random_weights->setChecked(true);
  EXPECT_TRUE(dialog.config().model.random_weights);
  random_weights->setChecked(false);
  tabs->setCurrentIndex(1);
  auto* caption = child<QLabel>(dialog, "datasetPreview.tokensCaption");
  ASSERT_TRUE(wait_until([&]() { return caption->text().contains("Row 1"); }, 30000)) << caption->text().toStdString();
  table->setCurrentCell(1, 0);
  EXPECT_TRUE(caption->text().contains("Row 2")) << caption->text().toStdString();
  QCoreApplication::processEvents();
  auto* preview = dialog.findChild<DatasetPreviewWidget*>();
  ASSERT_NE(preview, nullptr);
  EXPECT_TRUE(preview->tokensHtml().contains(QStringLiteral("┃"))) << "the prompt / completion boundary is shown";
  const QImage tokens_shot = dialog.grab().toImage();
  EXPECT_TRUE(shows_content(tokens_shot, dialog.size()));
  save_for_review(tokens_shot, "new_run_dialog_tokens.png");
  const QImage preview_shot = preview->grab().toImage();
  EXPECT_TRUE(shows_content(preview_shot, preview->size()));
  save_for_review(preview_shot, "dataset_preview_tokens.png");
}

}  // namespace
}  // namespace ganpo::ui
