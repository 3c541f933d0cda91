// Trainer::State, data: the task or data files, chat templates, label noise, the judge and its
// prompts, the sample prompts, and the rows each step takes.

#include "core/train/trainer_state.h"

namespace ganpo {
namespace {

// The SFT corpus mixes perfect answers with faulty ones so the reference is decent but
// imperfect, leaving room for preference optimization to improve it.
constexpr double kSftPerfectFraction = 0.5;

}  // namespace

template <typename Row>
void Trainer::State::render_conversations(std::vector<Row>& train, std::vector<Row>& eval) {
  const auto conversational = [](const Row& r) { return r.conversational(); };
  if (std::none_of(train.begin(), train.end(), conversational) &&
      std::none_of(eval.begin(), eval.end(), conversational))
    return;
  if (!tokenizer->uses_chat_template()) {
    log("info", "conversational rows use the plain <|role|> rendering: the byte tokenizer has no chat template");
    return;
  }
  const ChatTemplate tmpl = ChatTemplate::from_model_folder(config.model.checkpoint, config.data.chat_template);
  log("notice", "chat template: " + tmpl.variant() +
                  (config.data.chat_template.empty() ? " (recognised in the model's tokenizer_config.json)"
                                                     : " (data.chat_template = \"" + config.data.chat_template + "\")"));
  apply_chat_template(train, tmpl, config.data.train + " (training split)");
  apply_chat_template(eval, tmpl, (config.data.eval.empty() ? config.data.train : config.data.eval) + " (held-out split)");
}

void Trainer::State::load_data() {
  const auto& d = config.data;
  const uint64_t seed = static_cast<uint64_t>(config.seed);
  if (uses_builtin_task(d)) task = &builtin_task(builtin_task_name(d));
  if (preference) {
    std::vector<PreferenceExample> train, eval;
    if (task) {
      train = task->preference_pairs(d.builtin_train_size, d.label_noise, seed);
      eval = task->preference_pairs(d.builtin_eval_size, 0.0, seed + 7919);
    } else {
      load_files(load_preference_file, train, eval);
      add_label_noise(train);
      const auto plain = eval;  // the judge reads prompts without the chat template
      render_conversations(train, eval);
      pick_held_out_prompts(plain, eval, [](const PreferenceExample& ex) { return ex.chosen.size(); });
      pick_sample_prompts(plain, eval);
      // The same prompts for evaluations of its checkpoints later (`ganpo eval --prompts`), in
      // the run's folder, which rank 0 alone writes (another rank's config may name another).
      if (!judge_prompts.empty() && is_main())
        write_eval_prompts((std::filesystem::path(config.output_dir) / kJudgePromptsFile).string(), judge_prompts);
    }
    RowCuts cuts;
    for (const auto& ex : train) train_pairs.push_back(tokenize_pair(*tokenizer, ex, d.max_length, d.max_prompt_length, &cuts));
    log_row_cuts(cuts);
    for (const auto& ex : eval) eval_pairs.push_back(tokenize_pair(*tokenizer, ex, d.max_length, d.max_prompt_length));
  } else {
    std::vector<SftExample> train, eval;
    if (task) {
      train = task->sft_corpus(d.builtin_train_size, kSftPerfectFraction, seed);
      eval = task->sft_corpus(d.builtin_eval_size, 1.0, seed + 7919);
    } else {
      load_files(load_sft_file, train, eval);
      const auto plain = eval;
      render_conversations(train, eval);
      pick_sample_prompts(plain, eval);
    }
    RowCuts cuts;
    for (const auto& ex : train) train_sft.push_back(tokenize_sft(*tokenizer, ex, d.max_length, d.max_prompt_length, &cuts));
    log_row_cuts(cuts);
    for (const auto& ex : eval) eval_sft.push_back(tokenize_sft(*tokenizer, ex, d.max_length, d.max_prompt_length));
  }
  if (task) {
    for (auto& p : task->eval_prompts(config.sampling.num_prompts, seed + 17)) sample_prompts.push_back(std::move(p.prompt));
    judge_prompts = task->eval_prompts(config.eval.num_prompts, static_cast<uint64_t>(config.eval.seed));
    train_data = "built-in " + task->name() + " task, " + std::to_string(train_size()) + " generated examples" +
                 (preference && d.label_noise > 0 ? " (label noise " + format_number(d.label_noise) + ")" : "");
    eval_data = "built-in " + task->name() + " task, " +
                std::to_string(preference ? eval_pairs.size() : eval_sft.size()) + " generated examples";
  }
  set_up_judge();
  log("info", "training data: " + train_data + "; held-out data: " + eval_data);
  if (train_size() == 0) throw DataError("the training set is empty; check data.train or data.builtin_train_size");
}

void Trainer::State::log_row_cuts(const RowCuts& cuts) {
  if (cuts.cut == 0) return;
  const auto& d = config.data;
  const std::string responses = preference ? "responses" : "completions";
  log("warning", "data.max_length = " + std::to_string(d.max_length) + " cut " + std::to_string(cuts.cut) + " of " +
                     std::to_string(cuts.rows) + " training rows to fit (the start of " + std::to_string(cuts.prompts) +
                     " prompts, to their last data.max_prompt_length = " + std::to_string(d.max_prompt_length) +
                     " tokens; the end of " + std::to_string(cuts.responses) + " rows' " + responses +
                     "): to train on them whole, raise data.max_length (this model takes up to " +
                     std::to_string(policy->shape().max_seq_len) + " positions) and data.max_prompt_length");
}

void Trainer::State::add_label_noise(std::vector<PreferenceExample>& train) {
  const double p = config.data.label_noise;
  if (p <= 0) return;
  std::mt19937_64 rng(static_cast<uint64_t>(config.seed) ^ 0x9e3779b97f4a7c15ULL);
  int64_t swapped = 0;
  for (auto& ex : train)
    if (tasks::bernoulli(rng, p)) {
      std::swap(ex.chosen, ex.rejected);
      std::swap(ex.chosen_messages, ex.rejected_messages);
      ++swapped;
    }
  train_data += " (label noise " + format_number(p) + ": " + std::to_string(swapped) + " pairs swapped)";
}

template <typename Example, typename AnswerLength>
void Trainer::State::pick_held_out_prompts(const std::vector<Example>& plain, const std::vector<Example>& rendered,
                                           AnswerLength answer_length) {
  std::set<std::string> seen;
  std::vector<size_t> lengths;
  for (size_t i = 0; i < rendered.size() && static_cast<int64_t>(judge_prompts.size()) < config.eval.num_prompts; ++i) {
    if (rendered[i].prompt.empty() || !seen.insert(rendered[i].prompt).second) continue;
    judge_prompts.push_back({rendered[i].prompt, plain[i].prompt, ""});
    lengths.push_back(answer_length(plain[i]));
  }
  std::vector<size_t> sorted = lengths;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < judge_prompts.size(); ++i) {
    const size_t rank = static_cast<size_t>(std::lower_bound(sorted.begin(), sorted.end(), lengths[i]) - sorted.begin());
    judge_prompts[i].bucket = length_bucket_name(static_cast<int>(std::min<size_t>(2, 3 * rank / sorted.size())));
  }
}

void Trainer::State::set_up_judge() {
  const auto& e = config.eval;
  if (!e.judge_command.empty()) {
    const std::string command = e.judge_command;
    const double timeout = e.judge_timeout_s;
    judge = [command, timeout](const std::vector<JudgeRow>& rows) { return run_judge_command(command, rows, timeout); };
    judge_name = command;
  } else if (task) {
    judge = task_judge(*task);
    judge_name = "built-in";
  }
}

template <typename Example>
void Trainer::State::load_files(LoadResult<Example> (*load)(const std::string&, const std::string&),
                                std::vector<Example>& train, std::vector<Example>& eval) {
  const auto& d = config.data;
  auto rows_of = [](size_t used, size_t skipped) {
    return std::to_string(used) + " rows used, " + std::to_string(skipped) + " skipped";
  };
  auto loaded = load(d.train, d.on_bad_line);
  report_skipped(d.train, loaded.bad_lines);
  const size_t train_skipped = loaded.bad_lines.size();
  if (d.eval.empty()) {
    shuffle_split(std::move(loaded.rows), d.eval_fraction, static_cast<uint64_t>(config.seed), train, eval);
    eval_data = d.train + ": " + std::to_string(eval.size()) + " rows held out (data.eval_fraction " +
                format_number(d.eval_fraction) + ")";
  } else {
    train = std::move(loaded.rows);
    auto held_out = load(d.eval, d.on_bad_line);
    report_skipped(d.eval, held_out.bad_lines);
    eval = std::move(held_out.rows);
    eval_data = d.eval + ": " + rows_of(eval.size(), held_out.bad_lines.size());
  }
  train_data = d.train + ": " + rows_of(train.size(), train_skipped);
}

template <typename Example>
void Trainer::State::pick_sample_prompts(const std::vector<Example>& plain, const std::vector<Example>& rendered) {
  for (size_t i = 0; i < rendered.size(); ++i) {
    if (static_cast<int64_t>(sample_prompts.size()) >= config.sampling.num_prompts) break;
    if (rendered[i].prompt.empty()) continue;
    sample_prompts.push_back(rendered[i].prompt);
    sample_judge_prompts.push_back(plain[i].prompt);
  }
}

void Trainer::State::report_skipped(const std::string& file, const std::vector<BadLine>& bad) {
  if (bad.empty()) return;
  log("warning", "skipped " + std::to_string(bad.size()) + " bad line(s) in " + file +
                     " (first: line " + std::to_string(bad.front().line) + ": " + bad.front().reason + ")");
}

std::vector<int64_t> Trainer::State::epoch_rows(int64_t e, int64_t group_rows) const {
  const auto seed = static_cast<uint64_t>(config.seed);
  if (group_rows <= 0) return epoch_order(train_size(), seed, e);
  std::vector<int64_t> lengths;
  if (preference)
    for (const auto& p : train_pairs) lengths.push_back(row_length(p));
  else
    for (const auto& r : train_sft) lengths.push_back(row_length(r));
  return length_grouped_order(lengths, group_rows, seed, e);
}

std::vector<int64_t> Trainer::State::next_indices() {
  std::vector<int64_t> idx;
  const int64_t B = config.train.per_device_train_batch_size;
  const int64_t first = (dp ? dp->rank() : 0) * B;
  for (int64_t i = 0; i < B * world(); ++i) {
    if (cursor >= static_cast<int64_t>(order.size())) {
      ++epoch;
      cursor = 0;
      order_group_rows = configured_group_rows();
      order = epoch_rows(epoch, order_group_rows);
    }
    const int64_t row = order[static_cast<size_t>(cursor++)];
    if (i >= first && i < first + B) idx.push_back(row);
  }
  return idx;
}

}  // namespace ganpo
