#include "core/text/decoders.h"

#include "core/text/byte_level.h"
#include "core/text/regex.h"
#include "core/text/utf8.h"

namespace ganpo::text {

namespace {

const std::string kReplacementUtf8 = "\xEF\xBF\xBD";  // U+FFFD

// HF ByteLevel: every token whose characters are all byte symbols becomes those bytes (others
// keep their own UTF-8), all of it read as one lossy UTF-8 string: one output token.
class ByteLevelStage final : public DecodeStage {
public:
  explicit ByteLevelStage(DecodeStage* next) : next_(next) {}
  void begin() override { token_.clear(); }
  void text(std::string_view s) override { token_.append(s.data(), s.size()); }
  void end() override {
    if (!started_) {
      next_->begin();
      started_ = true;
    }
    out_.clear();
    if (ByteLevelAlphabet::get().unspell(token_, bytes_)) repair_.feed(bytes_, out_);
    else repair_.feed(token_, out_);
    if (!out_.empty()) next_->text(out_);
  }
  void finish() override {
    out_.clear();
    repair_.finish(out_);
    if (!out_.empty()) next_->text(out_);
    if (started_) next_->end();
    started_ = false;
    next_->finish();
  }

private:
  DecodeStage* next_;
  std::string token_, bytes_, out_;
  Utf8Repair repair_;
  bool started_ = false;
};

// HF Metaspace decoder: the replacement character becomes a space, except in the first token
// (when a prefix was prepended at encoding), where it is dropped.
class MetaspaceStage final : public DecodeStage {
public:
  MetaspaceStage(DecodeStage* next, std::string replacement, bool drop_in_first)
      : next_(next), rep_(std::move(replacement)), drop_in_first_(drop_in_first) {}
  void begin() override {
    ++index_;
    next_->begin();
  }
  void text(std::string_view s) override {
    out_.clear();
    const bool drop = drop_in_first_ && index_ == 1;
    size_t pos = 0;
    for (size_t hit = s.find(rep_); hit != std::string_view::npos; hit = s.find(rep_, pos)) {
      out_.append(s.data() + pos, hit - pos);
      if (!drop) out_ += ' ';
      pos = hit + rep_.size();
    }
    out_.append(s.data() + pos, s.size() - pos);
    if (!out_.empty()) next_->text(out_);
  }
  void end() override { next_->end(); }
  void finish() override { next_->finish(); }

private:
  DecodeStage* next_;
  std::string rep_, out_;
  bool drop_in_first_;
  size_t index_ = 0;
};

// HF Replace on each token. A literal pattern is streamed, holding back only a tail that could
// be the start of a match; a regex waits for the end of the token.
class ReplaceStage final : public DecodeStage {
public:
  ReplaceStage(DecodeStage* next, const std::string& literal, const Regex* regex,
               const std::string& content)
      : next_(next), literal_(literal), regex_(regex), content_(content) {}
  void begin() override {
    buffer_.clear();
    next_->begin();
  }
  void text(std::string_view s) override {
    buffer_.append(s.data(), s.size());
    if (!regex_) flush(false);
  }
  void end() override {
    flush(true);
    next_->end();
  }
  void finish() override { next_->finish(); }

private:
  void flush(bool token_done) {
    out_.clear();
    size_t keep_from = buffer_.size();
    if (regex_) {
      std::vector<std::pair<size_t, size_t>> matches;
      regex_->find_all(buffer_, matches);
      size_t last = 0;
      for (auto [b, e] : matches) {
        out_.append(buffer_, last, b - last);
        out_ += content_;
        last = e;
      }
      out_.append(buffer_, last, std::string::npos);
      buffer_.clear();
    } else {
      size_t last = 0;
      if (!literal_.empty()) {
        for (size_t hit = buffer_.find(literal_); hit != std::string::npos;
             hit = buffer_.find(literal_, last)) {
          out_.append(buffer_, last, hit - last);
          out_ += content_;
          last = hit + literal_.size();
        }
      }
      if (!token_done && !literal_.empty()) {
        // Longest tail that is a proper prefix of the pattern: the next text may complete it.
        const size_t max_tail = std::min(literal_.size() - 1, buffer_.size() - last);
        for (size_t t = max_tail; t > 0; --t) {
          if (buffer_.compare(buffer_.size() - t, t, literal_, 0, t) == 0) {
            keep_from = buffer_.size() - t;
            break;
          }
        }
      }
      out_.append(buffer_, last, keep_from - last);
      buffer_.erase(0, keep_from);
    }
    if (!out_.empty()) next_->text(out_);
  }

  DecodeStage* next_;
  const std::string& literal_;
  const Regex* regex_;
  const std::string& content_;
  std::string buffer_, out_;
};

// HF ByteFallback: a run of <0xNN> tokens becomes its bytes read as UTF-8, or one U+FFFD per
// byte token when they are not valid UTF-8, so a run is held until a non-byte token (or the
// end) closes it.
class ByteFallbackStage final : public DecodeStage {
public:
  explicit ByteFallbackStage(DecodeStage* next) : next_(next) {}
  void begin() override { token_.clear(); }
  void text(std::string_view s) override { token_.append(s.data(), s.size()); }
  void end() override {
    int byte = -1;
    if (token_.size() == 6 && token_.compare(0, 3, "<0x") == 0 && token_[5] == '>')
      byte = parse_hex(token_[3], token_[4]);
    if (byte >= 0) {
      run_.push_back(static_cast<char>(byte));
      return;
    }
    flush_run();
    emit(token_);
  }
  void finish() override {
    flush_run();
    next_->finish();
  }

private:
  // Rust's u8::from_str_radix(_, 16) on two characters: hex digits, or '+' and one digit.
  static int parse_hex(char a, char b) {
    auto digit = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    const int lo = digit(b);
    if (lo < 0) return -1;
    if (a == '+') return lo;
    const int hi = digit(a);
    return hi < 0 ? -1 : hi * 16 + lo;
  }
  void emit(std::string_view s) {
    next_->begin();
    if (!s.empty()) next_->text(s);
    next_->end();
  }
  void flush_run() {
    if (run_.empty()) return;
    if (is_valid_utf8(run_)) {
      emit(run_);
    } else {
      for (size_t i = 0; i < run_.size(); ++i) emit(kReplacementUtf8);
    }
    run_.clear();
  }

  DecodeStage* next_;
  std::string token_, run_;
};

// HF Fuse: all tokens become one.
class FuseStage final : public DecodeStage {
public:
  explicit FuseStage(DecodeStage* next) : next_(next) {}
  void begin() override {
    if (!started_) next_->begin();
    started_ = true;
  }
  void text(std::string_view s) override { next_->text(s); }
  void end() override {}
  void finish() override {
    if (started_) next_->end();
    started_ = false;
    next_->finish();
  }

private:
  DecodeStage* next_;
  bool started_ = false;
};

// HF Strip: removes up to `start` leading and `stop` trailing `content` characters of each
// token. Trailing candidates are held until a different character or the end of the token.
class StripStage final : public DecodeStage {
public:
  StripStage(DecodeStage* next, std::string content, size_t start, size_t stop)
      : next_(next), content_(std::move(content)), start_(start), stop_(stop) {}
  void begin() override {
    stripped_ = 0;
    front_done_ = start_ == 0;
    held_count_ = 0;
    held_.clear();
    next_->begin();
  }
  void text(std::string_view s) override {
    out_.clear();
    size_t i = 0;
    while (i < s.size()) {
      const size_t b = i;
      i += std::min(utf8_length(static_cast<unsigned char>(s[i])), s.size() - i);
      const std::string_view c = s.substr(b, i - b);
      const bool is_content = c == content_;
      if (!front_done_) {
        if (is_content && stripped_ < start_) {
          ++stripped_;
          continue;
        }
        front_done_ = true;
      }
      if (stop_ > 0 && is_content) {
        held_ += c;
        ++held_count_;
        continue;
      }
      out_ += held_;
      held_.clear();
      held_count_ = 0;
      out_ += c;
    }
    if (!out_.empty()) next_->text(out_);
  }
  void end() override {
    const size_t drop = std::min(stop_, held_count_);
    held_.resize(held_.size() - drop * content_.size());
    if (!held_.empty()) next_->text(held_);
    held_.clear();
    held_count_ = 0;
    next_->end();
  }
  void finish() override { next_->finish(); }

private:
  DecodeStage* next_;
  std::string content_;
  size_t start_, stop_;
  size_t stripped_ = 0;
  bool front_done_ = true;
  std::string held_, out_;
  size_t held_count_ = 0;
};

// No decoder: HF joins the tokens with single spaces.
class JoinStage final : public DecodeStage {
public:
  explicit JoinStage(DecodeStage* next) : next_(next) {}
  void begin() override {
    if (count_++ > 0) next_->text(" ");
  }
  void text(std::string_view s) override { next_->text(s); }
  void end() override {}
  void finish() override { next_->finish(); }

private:
  DecodeStage* next_;
  size_t count_ = 0;
};

template <typename Stage, typename... Args>
DecodeStage* make_stage(std::vector<std::unique_ptr<DecodeStage>>& owned, DecodeStage* next,
                        Args&&... args) {
  owned.push_back(std::make_unique<Stage>(next, std::forward<Args>(args)...));
  return owned.back().get();
}

class ByteLevelSpec final : public DecoderSpec {
public:
  DecodeStage* build(std::vector<std::unique_ptr<DecodeStage>>& owned, DecodeStage* next) const override {
    return make_stage<ByteLevelStage>(owned, next);
  }
};

class MetaspaceSpec final : public DecoderSpec {
public:
  MetaspaceSpec(std::string replacement, bool drop_in_first)
      : replacement_(std::move(replacement)), drop_in_first_(drop_in_first) {}
  DecodeStage* build(std::vector<std::unique_ptr<DecodeStage>>& owned, DecodeStage* next) const override {
    return make_stage<MetaspaceStage>(owned, next, replacement_, drop_in_first_);
  }

private:
  std::string replacement_;
  bool drop_in_first_;
};

class ReplaceSpec final : public DecoderSpec {
public:
  ReplaceSpec(std::string literal, std::unique_ptr<Regex> regex, std::string content)
      : literal_(std::move(literal)), regex_(std::move(regex)), content_(std::move(content)) {}
  DecodeStage* build(std::vector<std::unique_ptr<DecodeStage>>& owned, DecodeStage* next) const override {
    return make_stage<ReplaceStage>(owned, next, literal_, regex_.get(), content_);
  }

private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

class ByteFallbackSpec final : public DecoderSpec {
public:
  DecodeStage* build(std::vector<std::unique_ptr<DecodeStage>>& owned, DecodeStage* next) const override {
    return make_stage<ByteFallbackStage>(owned, next);
  }
};

class FuseSpec final : public DecoderSpec {
public:
  DecodeStage* build(std::vector<std::unique_ptr<DecodeStage>>& owned, DecodeStage* next) const override {
    return make_stage<FuseStage>(owned, next);
  }
};

class StripSpec final : public DecoderSpec {
public:
  StripSpec(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  DecodeStage* build(std::vector<std::unique_ptr<DecodeStage>>& owned, DecodeStage* next) const override {
    return make_stage<StripStage>(owned, next, content_, start_, stop_);
  }

private:
  std::string content_;
  size_t start_, stop_;
};

class SequenceSpec final : public DecoderSpec {
public:
  explicit SequenceSpec(std::vector<std::unique_ptr<DecoderSpec>> parts) : parts_(std::move(parts)) {}
  DecodeStage* build(std::vector<std::unique_ptr<DecodeStage>>& owned, DecodeStage* next) const override {
    for (auto it = parts_.rbegin(); it != parts_.rend(); ++it) next = (*it)->build(owned, next);
    return next;
  }

private:
  std::vector<std::unique_ptr<DecoderSpec>> parts_;
};

size_t json_count(const nlohmann::json& j, const char* key, const JsonPlace& at) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return 0;
  if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > 1'000'000)
    at.child(key).fail("expected a small non-negative integer, found " + json_excerpt(*it));
  return static_cast<size_t>(it->get<int64_t>());
}

}  // namespace

std::unique_ptr<DecoderSpec> make_decoder(const nlohmann::json& j, const JsonPlace& at) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type(j, at);
  if (type == "Sequence") {
    auto it = j.find("decoders");
    const JsonPlace list = at.child("decoders");
    if (it == j.end() || !it->is_array()) list.fail("expected a list");
    std::vector<std::unique_ptr<DecoderSpec>> parts;
    for (size_t i = 0; i < it->size(); ++i) {
      auto p = make_decoder((*it)[i], list.index(i));
      if (p) parts.push_back(std::move(p));
    }
    return std::make_unique<SequenceSpec>(std::move(parts));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelSpec>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackSpec>();
  if (type == "Fuse") return std::make_unique<FuseSpec>();
  if (type == "Strip")
    return std::make_unique<StripSpec>(json_char(j, "content", at), json_count(j, "start", at),
                                       json_count(j, "stop", at));
  if (type == "Metaspace") {
    const std::string replacement = json_char(j, "replacement", at);
    bool never = false;
    auto ps = j.find("prepend_scheme");
    if (ps != j.end() && ps->is_string()) never = ps->get<std::string>() == "never";
    if (!json_bool(j, "add_prefix_space", true, at)) never = true;
    return std::make_unique<MetaspaceSpec>(replacement, !never);
  }
  if (type == "Replace") {
    const std::string content = json_string(j, "content", at);
    auto it = j.find("pattern");
    const JsonPlace pat = at.child("pattern");
    if (it != j.end() && it->is_object()) {
      if (it->contains("String") && (*it)["String"].is_string())
        return std::make_unique<ReplaceSpec>((*it)["String"].get<std::string>(), nullptr, content);
      if (it->contains("Regex") && (*it)["Regex"].is_string()) {
        std::unique_ptr<Regex> re;
        try {
          re = std::make_unique<Regex>((*it)["Regex"].get<std::string>());
        } catch (const Error& e) {
          pat.fail(std::string(e.what()) + "; fix the pattern or use the file the model was published with");
        }
        return std::make_unique<ReplaceSpec>("", std::move(re), content);
      }
    }
    pat.fail("expected {\"String\": ...} or {\"Regex\": ...}");
  }
  at.fail("decoder type \"" + type +
          "\" is not supported (supported: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, "
          "Strip, Sequence); this build reads BPE tokenizers of the GPT-2, Llama, Qwen, Mistral "
          "and Gemma families");
}

struct DecodeStream::Collect final : public DecodeStage {
  std::string out;
  void begin() override {}
  void text(std::string_view s) override { out.append(s.data(), s.size()); }
  void end() override {}
  void finish() override {}
};

DecodeStream::DecodeStream(const DecoderSpec* spec) : sink_(std::make_unique<Collect>()) {
  head_ = spec ? spec->build(owned_, sink_.get()) : make_stage<JoinStage>(owned_, sink_.get());
}
DecodeStream::DecodeStream(DecodeStream&&) noexcept = default;
DecodeStream& DecodeStream::operator=(DecodeStream&&) noexcept = default;
DecodeStream::~DecodeStream() = default;

void DecodeStream::push(std::string_view token) {
  head_->begin();
  head_->text(token);
  head_->end();
}

void DecodeStream::finish() { head_->finish(); }

std::string DecodeStream::take() {
  std::string s;
  s.swap(sink_->out);
  return s;
}

}  // namespace ganpo::text
