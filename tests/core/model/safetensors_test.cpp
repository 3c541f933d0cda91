#include "core/model/safetensors.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/error.h"
#include "tests/support/expect_contains.h"

namespace ganpo {
namespace {

namespace fs = std::filesystem;

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// A file from a header text (not padded here) and a data section.
std::string file_bytes(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

std::string float_bytes(std::vector<float> v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// Same dtype, shape and bytes (so NaNs and -0.0 count as equal to themselves).
::testing::AssertionResult SameTensor(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type())
    return ::testing::AssertionFailure() << "dtype " << a.scalar_type() << " vs " << b.scalar_type();
  if (a.sizes() != b.sizes())
    return ::testing::AssertionFailure() << "shape " << a.sizes() << " vs " << b.sizes();
  torch::Tensor ca = a.contiguous().cpu(), cb = b.contiguous().cpu();
  const size_t n = static_cast<size_t>(ca.numel()) * ca.element_size();
  if (n && std::memcmp(ca.data_ptr(), cb.data_ptr(), n) != 0)
    return ::testing::AssertionFailure() << "bytes differ:\n" << a << "\nvs\n" << b;
  return ::testing::AssertionSuccess();
}

class SafetensorsTest : public ::testing::Test {
protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    dir_ = fs::temp_directory_path() /
           ("ganpo_safetensors_" + std::to_string(stamp) + "_" +
            std::to_string(std::random_device{}()) + "_" + std::to_string(counter++));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  std::string write(const std::string& name, const std::string& bytes) const {
    const std::string p = path(name);
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  }

  // The JSON header of a file's bytes.
  static std::string header_text(const std::string& bytes) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes.at(i));
    return bytes.substr(8, n);
  }

  static std::string read(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }

  // Loading must throw ModelFileError whose message names the file and contains `part`.
  void expect_corrupt(const std::string& p, const std::string& part) {
    try {
      load_safetensors(p);
      ADD_FAILURE() << "no exception for " << p << " (expected: " << part << ")";
    } catch (const ModelFileError& e) {
      EXPECT_CONTAINS(e.what(), p);
      EXPECT_CONTAINS(e.what(), part);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "wrong exception type: " << e.what();
    }
  }

  // A header describing one F32 tensor "a" with the given fields, and 8 data bytes.
  std::string one_tensor(const std::string& name, const std::string& entry,
                         const std::string& data = float_bytes({1.0f, 2.0f})) {
    return write(name, file_bytes("{\"a\":" + entry + "}", data));
  }

  fs::path dir_;
};

TEST_F(SafetensorsTest, RoundTripsEveryDtype) {
  std::vector<std::pair<std::string, torch::Tensor>> in;
  const torch::ScalarType types[] = {torch::kFloat64, torch::kFloat32, torch::kFloat16,
                                     torch::kBFloat16, torch::kInt64,  torch::kInt32,
                                     torch::kInt16,   torch::kInt8,    torch::kUInt8};
  for (auto t : types) {
    auto x = (torch::arange(24, torch::kFloat64) * 1.25 - 7).reshape({2, 3, 4}).to(t);
    in.emplace_back(std::string(c10::toString(t)), x);
  }
  in.emplace_back("bool", torch::arange(10).remainder(3).eq(0));
  in.emplace_back("f32_special", torch::tensor({0.0f, -0.0f, std::numeric_limits<float>::infinity(),
                                                std::nanf(""), 1e-40f}));
  in.emplace_back("i64_extremes", torch::tensor({std::numeric_limits<int64_t>::min(),
                                                 std::numeric_limits<int64_t>::max()}));
  const std::string p = path("all.safetensors");
  save_safetensors(p, in);
  const SafetensorsFile f = load_safetensors(p);
  ASSERT_EQ(f.tensors.size(), in.size());
  EXPECT_TRUE(f.metadata.empty());
  for (const auto& [name, x] : in) {
    SCOPED_TRACE(name);
    ASSERT_EQ(f.tensors.count(name), 1u);
    const torch::Tensor& y = f.tensors.at(name);
    EXPECT_TRUE(SameTensor(x, y));
    EXPECT_TRUE(y.is_contiguous());
    EXPECT_EQ(y.device().type(), torch::kCPU);
  }
  EXPECT_FALSE(fs::exists(p + ".tmp"));
}

TEST_F(SafetensorsTest, RowRangesEqualSlicesOfTheWholeTensor) {
  auto x = (torch::arange(7 * 5 * 3, torch::kFloat32) * 0.5).reshape({7, 5, 3}).to(torch::kBFloat16);
  const std::string p = path("rows.safetensors");
  save_safetensors(p, {{"a", torch::zeros({3})}, {"x", x}});
  SafetensorsReader reader(p);
  torch::Tensor staging;
  for (auto [begin, end] : std::vector<std::pair<int64_t, int64_t>>{{0, 7}, {0, 3}, {3, 7}, {6, 7}, {2, 2}}) {
    auto rows = reader.read_rows("x", begin, end, staging);
    EXPECT_TRUE(SameTensor(rows, x.slice(0, begin, end))) << begin << ".." << end;
  }
  EXPECT_THROW(reader.read_rows("x", 5, 8, staging), std::logic_error);
}

TEST_F(SafetensorsTest, RoundTripsScalarAndEmptyTensors) {
  const std::string p = path("shapes.safetensors");
  auto scalar = torch::scalar_tensor(3.5, torch::kFloat32);
  ASSERT_EQ(scalar.dim(), 0);
  auto empty = torch::empty({0, 3}, torch::kBFloat16);
  auto empty1 = torch::empty({0}, torch::kInt64);
  save_safetensors(p, {{"scalar", scalar}, {"empty", empty}, {"empty1", empty1},
                       {"after", torch::tensor({7, 8}, torch::kInt16)}});
  const auto f = load_safetensors(p);
  ASSERT_EQ(f.tensors.size(), 4u);
  EXPECT_EQ(f.tensors.at("scalar").dim(), 0);
  EXPECT_EQ(f.tensors.at("scalar").item<float>(), 3.5f);
  EXPECT_TRUE(SameTensor(f.tensors.at("empty"), empty));
  EXPECT_TRUE(SameTensor(f.tensors.at("empty1"), empty1));
  EXPECT_TRUE(SameTensor(f.tensors.at("after"), torch::tensor({7, 8}, torch::kInt16)));

  const auto header = nlohmann::json::parse(header_text(read(p)));
  EXPECT_EQ(header["scalar"]["shape"], nlohmann::json::array());
  EXPECT_EQ(header["empty"]["shape"], nlohmann::json({0, 3}));
}

TEST_F(SafetensorsTest, WritesNonContiguousTensorsInLogicalOrder) {
  auto base = torch::arange(6, torch::kFloat32).reshape({2, 3});
  auto t = base.t();
  ASSERT_FALSE(t.is_contiguous());
  auto sliced = torch::arange(20, torch::kInt32).slice(0, 1, 20, 3);
  const std::string p = path("nc.safetensors");
  save_safetensors(p, {{"t", t}, {"sliced", sliced}});
  const auto f = load_safetensors(p);
  EXPECT_TRUE(SameTensor(f.tensors.at("t"), t));
  EXPECT_EQ(f.tensors.at("t").sizes(), torch::IntArrayRef({3, 2}));
  EXPECT_TRUE(f.tensors.at("t").is_contiguous());
  EXPECT_TRUE(SameTensor(f.tensors.at("sliced"), sliced));
}

TEST_F(SafetensorsTest, LoadedTensorsOwnTheirMemory) {
  const std::string p = path("own.safetensors");
  save_safetensors(p, {{"x", torch::ones({4})}, {"y", torch::zeros({4})}});
  auto f = load_safetensors(p);
  fs::remove(p);
  f.tensors.at("x").add_(1);
  EXPECT_TRUE(SameTensor(f.tensors.at("x"), torch::full({4}, 2.0f)));
  EXPECT_TRUE(SameTensor(f.tensors.at("y"), torch::zeros({4})));
  EXPECT_NE(f.tensors.at("x").data_ptr(), f.tensors.at("y").data_ptr());
}

TEST_F(SafetensorsTest, RoundTripsMetadata) {
  const std::string p = path("meta.safetensors");
  const std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"note", "quotes \" and\nnewlines, ünïcödé"}, {"empty", ""}};
  save_safetensors(p, {{"w", torch::ones({2, 2})}}, meta);
  const auto f = load_safetensors(p);
  EXPECT_EQ(f.metadata, meta);
  EXPECT_EQ(f.tensors.size(), 1u);

  // Metadata comes first in the header, as the reference writer puts it.
  const std::string bytes = read(p);
  EXPECT_EQ(bytes.compare(8, 16, "{\"__metadata__\":"), 0) << bytes.substr(8, 40);

  // Without metadata there is no "__metadata__" entry.
  const std::string p2 = path("nometa.safetensors");
  save_safetensors(p2, {{"w", torch::ones({2, 2})}});
  EXPECT_EQ(read(p2).find("__metadata__"), std::string::npos);
  EXPECT_TRUE(load_safetensors(p2).metadata.empty());
}

TEST_F(SafetensorsTest, MatchesHandBuiltFileByteForByte) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  ASSERT_EQ(header.size(), 54u);
  const std::string padded = header + "  ";  // to 56, a multiple of 8
  std::string expected = std::string("\x38\0\0\0\0\0\0\0", 8) + padded;
  const float values[2] = {1.5f, -2.0f};
  expected.append(reinterpret_cast<const char*>(values), 8);
  ASSERT_EQ(expected.size(), 72u);

  const std::string p = path("exact.safetensors");
  save_safetensors(p, {{"a", torch::tensor({1.5f, -2.0f})}});
  EXPECT_EQ(read(p), expected);

  const auto f = load_safetensors(write("hand.safetensors", expected));
  ASSERT_EQ(f.tensors.size(), 1u);
  const auto& a = f.tensors.at("a");
  EXPECT_EQ(a.scalar_type(), torch::kFloat32);
  EXPECT_EQ(a.sizes(), torch::IntArrayRef({2}));
  EXPECT_EQ(a[0].item<float>(), 1.5f);
  EXPECT_EQ(a[1].item<float>(), -2.0f);

  // An unpadded header with keys in another order is just as valid.
  const auto g = load_safetensors(write(
      "unpadded.safetensors",
      file_bytes(R"({"a":{"data_offsets":[0,8],"shape":[2],"dtype":"F32"}})", float_bytes({4, 5}))));
  EXPECT_TRUE(SameTensor(g.tensors.at("a"), torch::tensor({4.0f, 5.0f})));
}

TEST_F(SafetensorsTest, WritesNamesSortedWithPaddedHeader) {
  const std::string p = path("sorted.safetensors");
  save_safetensors(p, {{"zeta", torch::ones({3})},
                       {"alpha", torch::ones({1}, torch::kFloat64)},
                       {"Mid", torch::ones({2}, torch::kInt8)},
                       {"mid", torch::ones({5}, torch::kBFloat16)}});
  const std::string bytes = read(p);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_LE(8 + n, bytes.size());
  const auto header = nlohmann::ordered_json::parse(bytes.substr(8, n));
  std::vector<std::string> keys;
  for (auto it = header.begin(); it != header.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"Mid", "alpha", "mid", "zeta"}));
  // Data follows the same order, packed from offset 0 to the end of the file.
  uint64_t expect_begin = 0;
  for (const auto& k : keys) {
    SCOPED_TRACE(k);
    EXPECT_EQ(header[k]["data_offsets"][0].get<uint64_t>(), expect_begin);
    expect_begin = header[k]["data_offsets"][1].get<uint64_t>();
  }
  EXPECT_EQ(8 + n + expect_begin, bytes.size());
  EXPECT_EQ(header["Mid"]["data_offsets"], nlohmann::ordered_json({0, 2}));
  EXPECT_EQ(header["alpha"]["data_offsets"], nlohmann::ordered_json({2, 10}));
}

TEST_F(SafetensorsTest, OverwritesAtomicallyAndRejectsBadArguments) {
  const std::string p = path("w.safetensors");
  save_safetensors(p, {{"x", torch::ones({2})}});
  save_safetensors(p, {{"y", torch::zeros({3})}});
  auto f = load_safetensors(p);
  EXPECT_EQ(f.tensors.count("x"), 0u);
  EXPECT_TRUE(SameTensor(f.tensors.at("y"), torch::zeros({3})));
  EXPECT_FALSE(fs::exists(p + ".tmp"));

  EXPECT_THROW(save_safetensors(p, {{"x", torch::ones({1})}, {"x", torch::ones({1})}}), Error);
  EXPECT_THROW(save_safetensors(p, {{"__metadata__", torch::ones({1})}}), Error);
  EXPECT_THROW(save_safetensors(p, {{"c", torch::ones({1}, torch::kComplexFloat)}}), Error);
  EXPECT_THROW(save_safetensors(p, {{"u", torch::Tensor()}}), Error);
  // The failed saves left the previous file alone.
  EXPECT_TRUE(SameTensor(load_safetensors(p).tensors.at("y"), torch::zeros({3})));

  EXPECT_THROW(save_safetensors(path("no/such/dir/x.safetensors"), {{"x", torch::ones({1})}}),
               ModelFileError);
}

TEST_F(SafetensorsTest, MissingOrShortFiles) {
  const std::string missing = path("missing.safetensors");
  try {
    load_safetensors(missing);
    ADD_FAILURE() << "no exception";
  } catch (const ModelFileError& e) {
    EXPECT_CONTAINS(e.what(), missing);
    EXPECT_CONTAINS(e.what(), "does not exist");
  }
  EXPECT_THROW(load_safetensors(dir_.string()), ModelFileError);
  expect_corrupt(write("empty.safetensors", ""), "0 bytes long");
  expect_corrupt(write("five.safetensors", std::string("\x08\0\0\0\0", 5)), "5 bytes long");
}

TEST_F(SafetensorsTest, HeaderLengthLargerThanFile) {
  std::string bytes = le64(123456789) + std::string(92, ' ');
  ASSERT_EQ(bytes.size(), 100u);
  expect_corrupt(write("huge.safetensors", bytes), "header length 123456789 exceeds file size 100");
  expect_corrupt(write("max.safetensors", le64(~uint64_t{0}) + "{}"), "exceeds file size 10");
  expect_corrupt(write("off_by_one.safetensors", le64(3) + "{}"), "header length 3 exceeds");
}

TEST_F(SafetensorsTest, TruncatedFile) {
  const std::string p = path("full.safetensors");
  save_safetensors(p, {{"a", torch::ones({4})}, {"b", torch::ones({3}, torch::kInt64)}});
  const std::string bytes = read(p);
  expect_corrupt(write("cut_data.safetensors", bytes.substr(0, bytes.size() - 1)),
                 "past the end");
  expect_corrupt(write("cut_header.safetensors", bytes.substr(0, 20)), "exceeds file size 20");
  // Every strict prefix is rejected, never crashes.
  for (size_t len = 0; len < bytes.size(); ++len) {
    SCOPED_TRACE(len);
    EXPECT_THROW(load_safetensors(write("prefix.safetensors", bytes.substr(0, len))),
                 ModelFileError);
  }
}

TEST_F(SafetensorsTest, GarbageAndInvalidJson) {
  std::mt19937 rng(42);
  std::string garbage(4096, '\0');
  for (auto& c : garbage) c = static_cast<char>(rng());
  EXPECT_THROW(load_safetensors(write("garbage.safetensors", garbage)), ModelFileError);
  // Text that happens to have a small "length": e.g. a JSON file saved under the wrong name.
  expect_corrupt(write("text.safetensors", file_bytes("not json at all!", "")),
                 "does not start with '{'");
  expect_corrupt(write("badjson.safetensors", file_bytes("{\"a\": [1, 2,", "")),
                 "not valid JSON");
  expect_corrupt(write("badutf8.safetensors", file_bytes("{\"\xff\xfe\":1}", "")),
                 "not valid JSON");
  expect_corrupt(write("tensor_not_obj.safetensors", file_bytes("{\"a\":5}", "")),
                 "not described by a JSON object");
  expect_corrupt(write("meta_not_obj.safetensors", file_bytes("{\"__metadata__\":[1]}", "")),
                 "\"__metadata__\" is not a JSON object");
  expect_corrupt(
      write("meta_not_str.safetensors", file_bytes("{\"__metadata__\":{\"k\":1}}", "")),
      "metadata value for \"k\" is not a string");
  // Deep nesting must not overflow the stack.
  std::string deep = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  EXPECT_THROW(load_safetensors(write("deep.safetensors", file_bytes(deep, ""))), ModelFileError);
}

TEST_F(SafetensorsTest, BadDtype) {
  expect_corrupt(one_tensor("f8.safetensors", R"({"dtype":"F8","shape":[2],"data_offsets":[0,8]})"),
                 "unknown dtype \"F8\"");
  expect_corrupt(one_tensor("lower.safetensors",
                            R"({"dtype":"f32","shape":[2],"data_offsets":[0,8]})"),
                 "unknown dtype");
  expect_corrupt(one_tensor("num.safetensors", R"({"dtype":4,"shape":[2],"data_offsets":[0,8]})"),
                 "no \"dtype\"");
  expect_corrupt(one_tensor("nodtype.safetensors", R"({"shape":[2],"data_offsets":[0,8]})"),
                 "no \"dtype\"");
}

TEST_F(SafetensorsTest, BadShape) {
  const char* cases[] = {
      R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})",
      R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})",
      R"({"dtype":"F32","shape":["2"],"data_offsets":[0,8]})",
      R"({"dtype":"F32","shape":[true],"data_offsets":[0,8]})",
      R"({"dtype":"F32","shape":[[2]],"data_offsets":[0,8]})",
      R"({"dtype":"F32","shape":[99999999999999999999999],"data_offsets":[0,8]})",
  };
  for (const char* c : cases) {
    SCOPED_TRACE(c);
    expect_corrupt(one_tensor("shape.safetensors", c), "not a list of non-negative integers");
  }
  expect_corrupt(one_tensor("noshape.safetensors", R"({"dtype":"F32","data_offsets":[0,8]})"),
                 "no \"shape\" list");
  expect_corrupt(one_tensor("shape2.safetensors", R"({"dtype":"F32","shape":2,"data_offsets":[0,8]})"),
                 "no \"shape\" list");
  // Overflowing products are caught before any arithmetic wraps.
  expect_corrupt(one_tensor("overflow.safetensors",
                            R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]})"),
                 "too large");
  expect_corrupt(one_tensor("overflow0.safetensors",
                            R"({"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]})"),
                 "too large");
  expect_corrupt(one_tensor("overflow_bytes.safetensors",
                            R"({"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]})"),
                 "too large");
  // Wrong element count for the byte range.
  expect_corrupt(one_tensor("count.safetensors", R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"),
                 "spanning 8 bytes, but F32 shape [3] needs 12");
}

TEST_F(SafetensorsTest, WrongOffsets) {
  expect_corrupt(one_tensor("past.safetensors", R"({"dtype":"F32","shape":[2],"data_offsets":[4,12]})"),
                 "past the end of the 8-byte data section");
  expect_corrupt(one_tensor("reversed.safetensors",
                            R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})"),
                 "begin after end");
  expect_corrupt(one_tensor("size.safetensors", R"({"dtype":"F32","shape":[2],"data_offsets":[0,4]})"),
                 "needs 8");
  expect_corrupt(one_tensor("neg.safetensors", R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})"),
                 "data_offsets");
  expect_corrupt(one_tensor("three.safetensors",
                            R"({"dtype":"F32","shape":[2],"data_offsets":[0,8,8]})"),
                 "data_offsets");
  expect_corrupt(one_tensor("missing.safetensors", R"({"dtype":"F32","shape":[2]})"),
                 "data_offsets");
  expect_corrupt(one_tensor("huge.safetensors",
                            R"({"dtype":"F32","shape":[2],"data_offsets":[18446744073709551615,7]})"),
                 "data_offsets");
  expect_corrupt(
      write("overlap.safetensors",
            file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                       float_bytes({1, 2, 3}))),
      "overlapping");
}

TEST_F(SafetensorsTest, BoolBytesMustBeZeroOrOne) {
  expect_corrupt(write("bool.safetensors",
                       file_bytes(R"({"b":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})",
                                  std::string("\x01\x00\x02", 3))),
                 "byte value 2");
}

TEST_F(SafetensorsTest, RandomCorruptionNeverCrashes) {
  const std::string p = path("base.safetensors");
  save_safetensors(p,
                   {{"a", torch::arange(6, torch::kFloat32).reshape({2, 3})},
                    {"b", torch::ones({2}, torch::kBool)},
                    {"c", torch::ones({3}, torch::kBFloat16)}},
                   {{"k", "v"}});
  const std::string base = read(p);
  std::mt19937 rng(1234);
  int loaded = 0, rejected = 0;
  for (int iter = 0; iter < 500; ++iter) {
    std::string bytes = base;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < flips; ++i) {
      // Bias towards the length and header, where parsing happens.
      const size_t pos = (rng() % 2) ? rng() % std::min<size_t>(bytes.size(), 120) : rng() % bytes.size();
      bytes[pos] = static_cast<char>(rng());
    }
    try {
      load_safetensors(write("mut.safetensors", bytes));
      ++loaded;
    } catch (const ModelFileError&) {
      ++rejected;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "iteration " << iter << ": unexpected exception " << e.what();
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_GT(loaded, 0);  // flips inside float data are still valid files
}

}  // namespace
}  // namespace ganpo
