#include "core/text/hf_tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/text/added_tokens.h"
#include "core/text/bpe.h"
#include "core/text/decoders.h"
#include "core/text/normalizers.h"
#include "core/text/post_processors.h"
#include "core/text/pre_tokenizers.h"
#ifdef GANPO_WITH_SENTENCEPIECE
#include "core/text/sentencepiece_tokenizer.h"
#endif
#include "core/text/utf8.h"

namespace ganpo {

namespace fs = std::filesystem;
using text::JsonPlace;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ModelFileError("cannot read " + path + ": check that the file exists and is readable");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json read_json(const std::string& path) {
  const std::string data = read_file(path);
  try {
    return nlohmann::json::parse(data);
  } catch (const nlohmann::json::exception& e) {
    throw ModelFileError(path + " is not valid JSON (" + e.what() +
                         "); the download is incomplete or damaged: download it again");
  }
}

// A special token in tokenizer_config.json / special_tokens_map.json: "text", {"content":
// "text", ...} or null. Returns whether the key was present.
bool special_token_text(const nlohmann::json& j, const char* key, const std::string& file,
                        std::string& out) {
  auto it = j.find(key);
  if (it == j.end()) return false;
  if (it->is_null()) {
    out.clear();
    return true;
  }
  if (it->is_string()) {
    out = it->get<std::string>();
    return true;
  }
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    out = (*it)["content"].get<std::string>();
    return true;
  }
  throw ModelFileError(file + ": " + key + " should be a string or {\"content\": \"...\"}, found " +
                       text::json_excerpt(*it) + "; fix or remove that entry");
}

}  // namespace

struct HfTokenizer::Impl {
  std::string tokenizer_path, config_path, special_map_path, template_path;

  std::unique_ptr<text::Normalizer> normalizer;
  std::unique_ptr<text::PreTokenizer> pre_tokenizer;
  std::unique_ptr<text::BpeModel> model;
  std::unique_ptr<text::PostProcessor> post_processor;
  std::unique_ptr<text::DecoderSpec> decoder;

  // Added tokens, by id (decode shows each one's content).
  std::vector<text::AddedToken> added;
  std::unordered_map<int32_t, size_t> added_index;  // id -> index in `added`
  std::unordered_map<std::string, int32_t> added_by_content;
  std::vector<std::string> matched_text;  // parallel to `added`: the content as matched (normalized where it is)
  text::TokenMatcher raw_matcher, normalized_matcher;
  std::vector<const text::AddedToken*> raw_tokens, normalized_tokens;
  std::vector<char> special_id;  // id -> decode(skip_special_tokens) drops it
  int32_t max_id = -1;

  void encode_text(std::string_view s, bool at_origin, std::vector<int32_t>& out) const;
  void release_scratch(size_t keep) const;
};

namespace {
text::PieceBuffer& piece_buffer() {
  thread_local text::PieceBuffer buf;
  return buf;
}
}  // namespace

void HfTokenizer::Impl::release_scratch(size_t keep) const {
  text::PieceBuffer& buf = piece_buffer();
  if (buf.text.capacity() > keep) std::string().swap(buf.text);
  if (buf.pieces.capacity() * sizeof(text::Piece) > keep) {
    std::vector<text::Piece>().swap(buf.pieces);
    std::vector<text::Piece>().swap(buf.next);
  }
}

void HfTokenizer::Impl::encode_text(std::string_view s, bool at_origin,
                                    std::vector<int32_t>& out) const {
  text::PieceBuffer& buf = piece_buffer();
  buf.reset(s, at_origin);
  if (pre_tokenizer) pre_tokenizer->apply(buf);
  if (buf.raw_bytes) {
    for (const text::Piece& p : buf.pieces) model->tokenize_bytes(buf.view(p), out);
  } else {
    for (const text::Piece& p : buf.pieces) model->tokenize(buf.view(p), out);
  }
}

HfTokenizer::HfTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HfTokenizer::~HfTokenizer() = default;

std::unique_ptr<HfTokenizer> HfTokenizer::from_folder(const std::string& dir) {
  const fs::path d(dir);
  const fs::path tj = d / "tokenizer.json";
  std::error_code ec;
  if (!fs::is_regular_file(tj, ec)) {
    if (fs::is_regular_file(d / "tokenizer.model", ec))
      throw ModelFileError(dir + " has tokenizer.model but no tokenizer.json: open it with "
                                 "open_hf_folder_tokenizer(), which uses SentencePiece for it");
    throw ModelFileError("no tokenizer.json in " + dir +
                         ": pick the folder of a Hugging Face model (the one with config.json "
                         "and tokenizer.json), or download the tokenizer files into it");
  }
  auto existing = [&](const char* name) {
    const fs::path p = d / name;
    return fs::is_regular_file(p, ec) ? p.string() : std::string();
  };
  auto tok = from_files(tj.string(), existing("tokenizer_config.json"),
                        existing("special_tokens_map.json"));
  if (tok->chat_template_.empty()) {
    const std::string jinja = existing("chat_template.jinja");
    if (!jinja.empty()) {
      tok->chat_template_ = read_file(jinja);
      tok->impl_->template_path = jinja;
    } else {
      const std::string json = existing("chat_template.json");
      if (!json.empty()) {
        const nlohmann::json j = read_json(json);
        if (j.is_object() && j.contains("chat_template") && j["chat_template"].is_string()) {
          tok->chat_template_ = j["chat_template"].get<std::string>();
          tok->impl_->template_path = json;
        }
      }
    }
  }
  return tok;
}

std::unique_ptr<HfTokenizer> HfTokenizer::from_files(const std::string& tokenizer_json,
                                                     const std::string& tokenizer_config,
                                                     const std::string& special_tokens_map) {
  auto impl = std::make_unique<Impl>();
  impl->tokenizer_path = tokenizer_json;
  impl->config_path = tokenizer_config;
  impl->special_map_path = special_tokens_map;
  const nlohmann::json j = read_json(tokenizer_json);
  const JsonPlace root{tokenizer_json, ""};
  if (!j.is_object()) root.fail("expected a JSON object at the top; this is not a tokenizer.json");
  if (j.contains("version") && !(j["version"].is_string() && j["version"].get<std::string>() == "1.0"))
    root.child("version").fail("unknown tokenizer.json version " + text::json_excerpt(j["version"]) +
                               " (this build reads version \"1.0\")");
  if (!j.contains("model")) root.child("model").fail("is missing; this is not a tokenizer.json");

  auto get = [&](const char* key) -> const nlohmann::json& {
    static const nlohmann::json null_json;
    auto it = j.find(key);
    return it == j.end() ? null_json : *it;
  };
  impl->normalizer = text::make_normalizer(get("normalizer"), root.child("normalizer"));
  impl->pre_tokenizer = text::make_pre_tokenizer(get("pre_tokenizer"), root.child("pre_tokenizer"));
  impl->model = text::BpeModel::from_json(j.at("model"), root.child("model"));
  impl->post_processor = text::make_post_processor(get("post_processor"), root.child("post_processor"));
  impl->decoder = text::make_decoder(get("decoder"), root.child("decoder"));
  if (impl->pre_tokenizer && impl->pre_tokenizer->ends_with_byte_level() &&
      impl->model->enable_raw_bytes()) {
    impl->pre_tokenizer->defer_byte_spelling();
  }
  impl->max_id = impl->model->max_id();

  // Added tokens, with HF's id rule: the vocabulary's id when the content is in it, otherwise
  // the next free id after the vocabulary (the "id" field is only checked by HF, not used).
  const nlohmann::json& added_json = get("added_tokens");
  const JsonPlace added_at = root.child("added_tokens");
  if (!added_json.is_null() && !added_json.is_array()) added_at.fail("expected a list");
  int32_t next_id = static_cast<int32_t>(impl->model->vocab_size());
  for (size_t i = 0; i < added_json.size(); ++i) {
    const nlohmann::json& a = added_json[i];
    const JsonPlace at = added_at.index(i);
    if (!a.is_object()) at.fail("expected an object");
    text::AddedToken t;
    t.content = text::json_string(a, "content", at);
    if (t.content.empty()) continue;
    t.special = text::json_bool(a, "special", false, at);
    t.single_word = text::json_bool(a, "single_word", false, at);
    t.lstrip = text::json_bool(a, "lstrip", false, at);
    t.rstrip = text::json_bool(a, "rstrip", false, at);
    t.normalized = text::json_bool(a, "normalized", !t.special, at);
    auto known = impl->added_by_content.find(t.content);
    if (known != impl->added_by_content.end()) {
      t.id = known->second;
    } else {
      t.id = impl->model->token_to_id(t.content);
      if (t.id < 0) t.id = next_id++;
    }
    std::string shown = t.content;
    if (t.normalized && impl->normalizer) impl->normalizer->normalize(shown);
    impl->added_by_content[t.content] = t.id;
    auto slot = impl->added_index.find(t.id);
    if (slot != impl->added_index.end()) {
      impl->added[slot->second] = t;
      impl->matched_text[slot->second] = shown;
    } else {
      impl->added_index[t.id] = impl->added.size();
      impl->added.push_back(t);
      impl->matched_text.push_back(shown);
    }
    impl->max_id = std::max(impl->max_id, t.id);
  }
  std::vector<std::string> raw_patterns, normalized_patterns;
  for (size_t i = 0; i < impl->added.size(); ++i) {
    const text::AddedToken& t = impl->added[i];
    if (t.normalized) {
      normalized_patterns.push_back(impl->matched_text[i]);
      impl->normalized_tokens.push_back(&t);
    } else {
      raw_patterns.push_back(t.content);
      impl->raw_tokens.push_back(&t);
    }
  }
  impl->raw_matcher = text::TokenMatcher(raw_patterns);
  impl->normalized_matcher = text::TokenMatcher(normalized_patterns);

  // HF's skip_special_tokens drops every id whose token text is a special token's content.
  impl->special_id.assign(static_cast<size_t>(impl->max_id + 1), 0);
  std::unordered_set<std::string> special_contents;
  for (const auto& t : impl->added)
    if (t.special) special_contents.insert(t.content);
  for (const auto& t : impl->added)
    if (special_contents.count(t.content)) impl->special_id[static_cast<size_t>(t.id)] = 1;
  for (const std::string& s : special_contents) {
    const int32_t id = impl->model->token_to_id(s);
    if (id >= 0 && !impl->added_index.count(id)) impl->special_id[static_cast<size_t>(id)] = 1;
  }

  std::unique_ptr<HfTokenizer> tok(new HfTokenizer(std::move(impl)));
  Impl& m = *tok->impl_;

  // tokenizer_config.json, then special_tokens_map.json, which transformers lets win.
  nlohmann::json config = nlohmann::json::object();
  if (!tokenizer_config.empty()) {
    config = read_json(tokenizer_config);
    if (!config.is_object())
      throw ModelFileError(tokenizer_config + ": expected a JSON object; this is not a tokenizer_config.json");
  }
  const char* kSpecialKeys[] = {"bos_token", "eos_token", "pad_token", "unk_token"};
  std::string* kSpecialOut[] = {&tok->bos_token_, &tok->eos_token_, &tok->pad_token_, &tok->unk_token_};
  bool has_pad = false;
  for (int k = 0; k < 4; ++k)
    if (special_token_text(config, kSpecialKeys[k], tokenizer_config, *kSpecialOut[k]) && k == 2)
      has_pad = !tok->pad_token_.empty();
  if (!special_tokens_map.empty()) {
    const nlohmann::json map = read_json(special_tokens_map);
    if (!map.is_object())
      throw ModelFileError(special_tokens_map + ": expected a JSON object; this is not a special_tokens_map.json");
    for (int k = 0; k < 4; ++k) {
      std::string value;
      if (special_token_text(map, kSpecialKeys[k], special_tokens_map, value) && !value.empty()) {
        *kSpecialOut[k] = value;
        if (k == 2) has_pad = true;
      }
    }
  }
  if (tok->unk_token_.empty()) tok->unk_token_ = m.model->unk_token();
  auto id_of = [&](const std::string& s) -> int64_t {
    if (s.empty()) return -1;
    const auto id = tok->token_to_id(s);
    return id ? *id : -1;
  };
  tok->bos_id_ = id_of(tok->bos_token_);
  tok->eos_id_ = id_of(tok->eos_token_);
  // Like TRL: without a pad token, pad with EOS.
  if (!has_pad || tok->pad_token_.empty() || id_of(tok->pad_token_) < 0) tok->pad_token_ = tok->eos_token_;
  tok->pad_id_ = id_of(tok->pad_token_);

  auto flag = [&](const char* key) -> std::optional<bool> {
    auto it = config.find(key);
    if (it == config.end() || it->is_null()) return std::nullopt;
    if (!it->is_boolean())
      throw ModelFileError(tokenizer_config + ": " + key + " should be true or false, found " +
                           text::json_excerpt(*it));
    return it->get<bool>();
  };
  tok->add_bos_token_ = flag("add_bos_token");
  tok->add_eos_token_ = flag("add_eos_token");
  // transformers' Llama and Gemma fast tokenizers rebuild the template from these two flags.
  const std::string cls = config.value("tokenizer_class", std::string());
  const bool llama_like = cls.rfind("LlamaTokenizer", 0) == 0 || cls.rfind("GemmaTokenizer", 0) == 0 ||
                          cls.rfind("CodeLlamaTokenizer", 0) == 0;
  if (llama_like && (tok->add_bos_token_ || tok->add_eos_token_)) {
    std::vector<int32_t> before, after;
    if (tok->add_bos_token_.value_or(true) && tok->bos_id_ >= 0) before.push_back(static_cast<int32_t>(tok->bos_id_));
    if (tok->add_eos_token_.value_or(false) && tok->eos_id_ >= 0) after.push_back(static_cast<int32_t>(tok->eos_id_));
    m.post_processor = text::make_wrap_processor(std::move(before), std::move(after));
  }

  auto ct = config.find("chat_template");
  if (ct != config.end()) {
    if (ct->is_string()) {
      tok->chat_template_ = ct->get<std::string>();
    } else if (ct->is_array()) {
      for (const auto& e : *ct)
        if (e.is_object() && e.value("name", std::string()) == "default" && e.contains("template") &&
            e["template"].is_string())
          tok->chat_template_ = e["template"].get<std::string>();
    } else if (!ct->is_null()) {
      throw ModelFileError(tokenizer_config + ": chat_template should be a string or a list of "
                           "{\"name\", \"template\"}, found " + text::json_excerpt(*ct));
    }
  }
  return tok;
}

int64_t HfTokenizer::vocab_size() const { return static_cast<int64_t>(impl_->max_id) + 1; }

std::vector<int64_t> HfTokenizer::encode(const std::string& text) const { return encode(text, false); }

std::vector<int64_t> HfTokenizer::leading_special_tokens() const {
  if (!impl_->post_processor) return {};
  constexpr int32_t kText = -1;  // (no id: where the text's own ids go)
  std::vector<int32_t> ids{kText};
  impl_->post_processor->add_special_tokens(ids);
  return std::vector<int64_t>(ids.begin(), std::find(ids.begin(), ids.end(), kText));
}

std::vector<int64_t> HfTokenizer::encode(const std::string& text_in, bool add_special_tokens) const {
  const Impl& m = *impl_;
  // Pieces address the text with 32-bit offsets.
  if (text_in.size() > (size_t{1} << 31))
    throw Error("cannot tokenize a text of " + std::to_string(text_in.size()) +
                " bytes at once (the limit is 2 GiB): split it into documents first");
  // Invalid UTF-8 becomes U+FFFD first, so every later stage sees valid text.
  std::string repaired;
  std::string_view input(text_in);
  if (!text::is_valid_utf8(input)) {
    repaired = text::make_valid_utf8(input);
    input = repaired;
  }
  thread_local std::vector<text::TextSegment> segments, inner;
  thread_local std::vector<int32_t> ids;
  thread_local std::string normalized;
  segments.clear();
  ids.clear();
  text::split_added_tokens(input, m.raw_matcher, m.raw_tokens, segments);
  for (const text::TextSegment& seg : segments) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    const std::string_view part = input.substr(seg.begin, seg.end - seg.begin);
    const bool at_origin = seg.begin == 0;
    if (!m.normalizer && m.normalized_matcher.empty()) {
      m.encode_text(part, at_origin, ids);
      continue;
    }
    normalized.assign(part.data(), part.size());
    if (m.normalizer) m.normalizer->normalize(normalized);
    inner.clear();
    text::split_added_tokens(normalized, m.normalized_matcher, m.normalized_tokens, inner);
    for (const text::TextSegment& sub : inner) {
      if (sub.id >= 0) ids.push_back(sub.id);
      else m.encode_text(std::string_view(normalized).substr(sub.begin, sub.end - sub.begin),
                         at_origin && sub.begin == 0, ids);
    }
  }
  if (add_special_tokens && m.post_processor) m.post_processor->add_special_tokens(ids);
  std::vector<int64_t> result(ids.begin(), ids.end());
  // The per-thread scratch keeps its capacity between calls, but not that of a huge text.
  constexpr size_t kKeep = size_t{8} << 20;
  if (ids.capacity() > kKeep / sizeof(int32_t)) std::vector<int32_t>().swap(ids);
  if (normalized.capacity() > kKeep) std::string().swap(normalized);
  m.release_scratch(kKeep);
  return result;
}

std::optional<std::string_view> HfTokenizer::token_text(int64_t id) const {
  const Impl& m = *impl_;
  if (id < 0 || id > m.max_id) return std::nullopt;
  auto it = m.added_index.find(static_cast<int32_t>(id));
  // An added token reads as its content, as HF's id_to_token gives it: not the normalized form
  // a normalized:true token is matched by ("▁hello" for "hello" under Llama 2's normalizer).
  if (it != m.added_index.end()) return std::string_view(m.added[it->second].content);
  return m.model->id_to_token(static_cast<int32_t>(id));
}

bool HfTokenizer::is_special(int64_t id) const {
  return id >= 0 && id <= impl_->max_id && impl_->special_id[static_cast<size_t>(id)];
}

std::string HfTokenizer::decode(const std::vector<int64_t>& ids) const { return decode(ids, true); }

std::string HfTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  text::DecodeStream stream(impl_->decoder.get());
  for (int64_t id : ids) {
    if (skip_special_tokens && is_special(id)) continue;
    if (auto t = token_text(id)) stream.push(*t);
  }
  stream.finish();
  return stream.take();
}

std::optional<int64_t> HfTokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->added_by_content.find(std::string(token));
  if (it != impl_->added_by_content.end()) return it->second;
  const int32_t id = impl_->model->token_to_id(token);
  if (id >= 0) return id;
  return std::nullopt;
}

std::optional<std::string> HfTokenizer::id_to_token(int64_t id) const {
  auto t = token_text(id);
  if (!t) return std::nullopt;
  return std::string(*t);
}

void HfTokenizer::save(const std::string& dir) const {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw ModelFileError("cannot create " + dir + " (" + ec.message() + "): choose a writable folder");
  auto copy = [&](const std::string& src, const char* name) {
    if (src.empty()) return;
    const fs::path dst = fs::path(dir) / name;
    std::error_code e;
    if (fs::exists(dst, e) && fs::equivalent(src, dst, e)) return;  // saving into its own folder
    fs::copy_file(src, dst, fs::copy_options::overwrite_existing, e);
    if (e)
      throw ModelFileError("cannot copy " + src + " to " + dst.string() + " (" + e.message() +
                           "): check that the source still exists and the folder is writable");
  };
  copy(impl_->tokenizer_path, "tokenizer.json");
  copy(impl_->config_path, "tokenizer_config.json");
  copy(impl_->special_map_path, "special_tokens_map.json");
  if (!impl_->template_path.empty())
    copy(impl_->template_path, fs::path(impl_->template_path).filename().string().c_str());
}

HfTokenizer::IncrementalDecoder HfTokenizer::incremental_decoder(bool skip_special_tokens) const {
  return IncrementalDecoder(this, skip_special_tokens);
}

std::unique_ptr<TextStream> HfTokenizer::text_stream() const {
  class Stream final : public TextStream {
  public:
    explicit Stream(IncrementalDecoder d) : d_(std::move(d)) {}
    std::string push(int64_t id) override { return d_.push(id); }
    std::string finish() override { return d_.finish(); }

  private:
    IncrementalDecoder d_;
  };
  return std::make_unique<Stream>(incremental_decoder(true));
}

HfTokenizer::IncrementalDecoder::IncrementalDecoder(const HfTokenizer* tok, bool skip)
    : tok_(tok), skip_(skip), stream_(std::make_unique<text::DecodeStream>(tok->impl_->decoder.get())) {}
HfTokenizer::IncrementalDecoder::IncrementalDecoder(IncrementalDecoder&&) noexcept = default;
HfTokenizer::IncrementalDecoder& HfTokenizer::IncrementalDecoder::operator=(IncrementalDecoder&&) noexcept = default;
HfTokenizer::IncrementalDecoder::~IncrementalDecoder() = default;

std::string HfTokenizer::IncrementalDecoder::push(int64_t id) {
  if (skip_ && tok_->is_special(id)) return {};
  if (auto t = tok_->token_text(id)) stream_->push(*t);
  return stream_->take();
}

std::string HfTokenizer::IncrementalDecoder::finish() {
  stream_->finish();
  std::string rest = stream_->take();
  stream_ = std::make_unique<text::DecodeStream>(tok_->impl_->decoder.get());
  return rest;
}

std::unique_ptr<Tokenizer> open_hf_folder_tokenizer(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_regular_file(fs::path(dir) / "tokenizer.json", ec) &&
      fs::is_regular_file(fs::path(dir) / "tokenizer.model", ec)) {
#ifdef GANPO_WITH_SENTENCEPIECE
    return SentencePieceTokenizer::from_folder(dir);
#else
    throw ModelFileError(dir + " has a tokenizer.model but no tokenizer.json, and this build reads "
                         "tokenizer.model only with -DGANPO_WITH_SENTENCEPIECE=ON; write a tokenizer.json "
                         "with transformers: AutoTokenizer.from_pretrained(dir).save_pretrained(dir)");
#endif
  }
  return HfTokenizer::from_folder(dir);
}

}  // namespace ganpo
