#include "core/data_parallel.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <netdb.h>
#include <sys/socket.h>
#include <torch/version.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <new>
#include <string>
#include <thread>

#include <unistd.h>

#include "core/error.h"
#include "core/out_of_memory.h"
#include "core/relaunch_request.h"

namespace ganpo {
namespace {

// What runs the collectives: from LibTorch 2.0 on, Gloo and NCCL are c10d::Backend classes (a
// ProcessGroup is a wrapper that dispatches to them); in 1.13 they were ProcessGroup classes.
// The collectives called here have the same signatures on both.
#if TORCH_VERSION_MAJOR >= 2
using CollectiveBackend = c10d::Backend;
#else
using CollectiveBackend = c10d::ProcessGroup;
#endif

constexpr int64_t kBucketBytes = 25 * 1024 * 1024;  // DDP's default bucket_cap_mb
// How long a rank whose collective failed waits for its launcher to take another rank's standing
// request (core/relaunch_request.h): the launcher looks every 50 ms; this is for a loaded machine.
constexpr int kStandingRequestWaitMs = 10'000;

// The message of the exception being handled; c10 errors without their backtrace.
std::string current_error_text() {
  try {
    throw;
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error";
  }
}

// TCPStoreOptions::useLibUV (LibTorch 2.2 on; true by default from 2.4) where the options have it.
template <typename Options>
auto turn_libuv_off(Options& options, int) -> decltype(options.useLibUV = false, bool()) {
  if (!options.useLibUV) return false;
  options.useLibUV = false;
  return true;
}
template <typename Options>
bool turn_libuv_off(Options&, long) {
  return false;
}

// The rendezvous store. LibTorch 2.4 and later serve it with libuv by default, and refuse to when
// built without libuv (as Debian's 2.6 is): then the classic TCP server, which every rank picks
// the same way, so clients and server agree.
c10::intrusive_ptr<c10d::TCPStore> connect_store(const std::string& address, c10d::TCPStoreOptions options) {
  // A name that does not resolve never will: say so now, not once a second until the timeout.
  // (A lookup that fails for now, EAI_AGAIN, is left to the store's own retries.)
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(address.c_str(), nullptr, &hints, &found); rc == 0) {
    ::freeaddrinfo(found);
  } else if (rc == EAI_NONAME || rc == EAI_FAIL || rc == EAI_SERVICE) {
    throw ConfigError("the rendezvous address " + address + " (MASTER_ADDR, or ganpo launch --master-addr) does not "
                      "resolve (" + ::gai_strerror(rc) + "); give node 0's host name or IP address");
  }
  try {
    return c10::make_intrusive<c10d::TCPStore>(address, options);
  } catch (const c10::Error& e) {
    if (std::string(e.what()).find("libuv") == std::string::npos || !turn_libuv_off(options, 0)) throw;
    return c10::make_intrusive<c10d::TCPStore>(address, options);
  }
}

// A Gloo group over `store`. GLOO_SOCKET_IFNAME picks the network interface as in PyTorch;
// otherwise the address the host name resolves to (loopback on a single machine without one).
c10::intrusive_ptr<CollectiveBackend> gloo_group(const c10::intrusive_ptr<c10d::Store>& store, const DistributedEnv& env,
                                                 std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  else
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  options->threads = 1;  // the training threads need the cores; one transport thread suffices
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, env.rank, env.world_size, options);
}

}  // namespace

struct DataParallel::Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<CollectiveBackend> group;  // the collectives on the run's device
  c10::intrusive_ptr<CollectiveBackend> host;   // Gloo, host tensors only
};

DataParallel::DataParallel(const DistributedEnv& env, const torch::Device& device, std::chrono::milliseconds timeout)
    : env_(env), device_(device), group_(std::make_unique<Group>()) {
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(env.master_port);
    store_options.isServer = env.rank == 0;
    store_options.numWorkers = env.world_size;
    store_options.timeout = timeout;
    auto tcp = connect_store(env.master_addr, store_options);
    group_->store = c10::make_intrusive<c10d::PrefixStore>("ganpo", tcp);
    if (device.is_cuda()) {
#ifdef USE_C10D_NCCL
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      group_->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(group_->store, env.rank, env.world_size, options);
#else
      throw ConfigError("this LibTorch has no NCCL, so a CUDA run cannot be data-parallel; use device = \"cpu\" "
                        "(Gloo) or a LibTorch built with NCCL");
#endif
    } else {
      group_->group = gloo_group(group_->store, env, timeout);
    }
    // The control agreement's own Gloo group, on the host on CUDA runs too: an NCCL all-reduce
    // of a host value goes through the device and waits for every step the host has queued.
    group_->host = gloo_group(c10::make_intrusive<c10d::PrefixStore>("host", group_->store), env, timeout);
    if (!env.relaunch_dir.empty())
      relaunch_watch_ = std::make_unique<RelaunchWatch>(env.relaunch_dir, env.rank, RelaunchWatch::grace_for(timeout));
  } catch (const ConfigError&) {
    throw;
  } catch (...) {
    const std::string detail = current_error_text();
    throw Error("rank " + std::to_string(env.rank) + " could not join the other " + std::to_string(env.world_size - 1) +
                " process(es) at " + env.master_addr + ":" + std::to_string(env.master_port) + " (" + detail +
                "); check that every rank started with the same MASTER_ADDR / MASTER_PORT, that the port is free "
                "and reachable, and that none failed at start (their logs say)");
  }
}

DataParallel::~DataParallel() = default;

void DataParallel::note_progress(int64_t position, const std::string& where) {
  try {
    const std::string value = std::to_string(position) + "|" + where;
    group_->store->set("progress/" + std::to_string(env_.rank), std::vector<uint8_t>(value.begin(), value.end()));
  } catch (...) {
    // The store is rank 0's: when it is gone, the next collective says so.
  }
}

void DataParallel::note_failure(const std::string& message) {
  try {
    group_->store->set("failure/" + std::to_string(env_.rank), std::vector<uint8_t>(message.begin(), message.end()));
  } catch (...) {
    // as note_progress: the store is rank 0's
  }
}

// "rank 1 failed: <its message>" for each other rank that recorded why it failed ("" if none).
std::string DataParallel::failures_of_other_ranks() const {
  std::string out;
  try {
    for (int r = 0; r < env_.world_size; ++r) {
      const std::string key = "failure/" + std::to_string(r);
      if (r == env_.rank || !group_->store->check({key})) continue;
      const auto bytes = group_->store->get(key);
      out += (out.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + " failed: " +
             std::string(bytes.begin(), bytes.end());
    }
  } catch (...) {
  }
  return out;
}

// "rank 0: logging step 2; rank 1: finished step 2 (behind: it hung or died)", from the store,
// which rank 0 serves.
DataParallel::RanksProgress DataParallel::progress_of_ranks() const {
  struct Progress {
    int64_t position = -1;
    std::string where = "not started";
  };
  std::vector<Progress> ranks(static_cast<size_t>(env_.world_size));
  int64_t furthest = -1;
  try {
    for (int r = 0; r < env_.world_size; ++r) {
      const std::string key = "progress/" + std::to_string(r);
      if (!group_->store->check({key})) continue;
      const auto bytes = group_->store->get(key);
      const std::string text(bytes.begin(), bytes.end());
      const auto bar = text.find('|');
      auto& p = ranks[static_cast<size_t>(r)];
      p.position = std::stoll(text.substr(0, bar));
      p.where = bar == std::string::npos ? "" : text.substr(bar + 1);
      furthest = std::max(furthest, p.position);
    }
  } catch (...) {
    return {};
  }
  RanksProgress out;
  for (size_t r = 0; r < ranks.size(); ++r) {
    out.text += (out.text.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + ": " + ranks[r].where +
                (ranks[r].position < furthest ? " (behind: it hung or died)" : "");
    if (static_cast<int>(r) != env_.rank && ranks[r].where.rfind(kTryingLongestRowsProgress, 0) == 0)
      out.other_trying = true;
  }
  return out;
}

// c10d and Gloo errors carry backtraces or transport details; say what happened, which ranks fell
// behind, and what to do.
void DataParallel::rethrow_collective_error(const std::string& what) const {
  // This rank's own out of memory (bucketing the gradients, say) stays one: the trainer's
  // out-of-memory path, train.auto_find_batch_size's included, takes it.
  try {
    throw;
  } catch (const c10::Error& e) {
    if (is_out_of_memory(e)) throw;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (...) {
  }
  const std::string detail = current_error_text();
  const RanksProgress progress = progress_of_ranks();
  const std::string failures = failures_of_other_ranks();
  if (!failures.empty())
    throw Error("data-parallel " + what + " failed on rank " + std::to_string(env_.rank) + " of " +
                std::to_string(env_.world_size) + " because " + failures);
  // A rank that ran out of memory with train.auto_find_batch_size asked the launcher to start
  // every rank again, and left (core/relaunch_request.h): this one ends too, without failing.
  // So does one the system ended for its memory while it tried its longest rows: its standing
  // request becomes its request once the launcher finds it ended by SIGKILL (within its 50 ms
  // poll; a rank that hung or ended otherwise leaves it standing, and this one fails as before).
  if (!env_.relaunch_dir.empty()) {
    const bool another_standing = standing_request_of_another(env_.relaunch_dir, env_.rank).has_value();
    auto request = read_relaunch_request(env_.relaunch_dir);
    for (int waited_ms = 0; !request && another_standing && waited_ms < kStandingRequestWaitMs; waited_ms += 20) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      request = read_relaunch_request(env_.relaunch_dir);
    }
    if (request)
      throw RelaunchRequested("rank " + std::to_string(request->rank) +
                              " ran out of memory; train.auto_find_batch_size: the launcher starts the " +
                              std::to_string(env_.world_size) + " processes again with " + request->change +
                              (request->reason.empty() ? "" : ". Rank " + std::to_string(request->rank) + ": " + request->reason));
  }
  // The store is rank 0's: where it no longer answers, rank 0 is the one that went away.
  if (env_.rank != 0 && !store_answers())
    throw Error("data-parallel " + what + " failed on rank " + std::to_string(env_.rank) + " of " +
                std::to_string(env_.world_size) + ": rank 0 stopped or could not be reached (the rendezvous store it "
                "serves is gone too: " + detail + "). Rank 0's own log says why (the launcher's console, or the "
                "run's log in the workspace); the run is resumable from its last checkpoint");
  // A rank that runs out of memory says so (note_failure) unless the system ended it for its
  // memory, without a word: where it was trying its longest rows, that is the likely reason. (Not
  // where the collective timed out: a rank that went away closes its connections at once, so that
  // one hangs.)
  const bool timed_out = detail.find("Timed out") != std::string::npos || detail.find("timed out") != std::string::npos ||
                         detail.find("timeout") != std::string::npos;  // (Gloo's words; NCCL's watchdog's)
  const std::string memory =
      !progress.other_trying || timed_out ? ""
      : std::string(". A rank that went away while trying its longest training rows ahead (which every rank does "
                    "after its first step so that memory they would run out of runs out then) ") +
            (device_.is_cuda() ? "may have run out of host memory" : "most likely ran out of memory") +
            ": the system's out-of-memory killer ends such a process without a word (`journalctl -k | grep -i "
            "\"killed process\"` says)";
  // (On a GPU the run's settings change its host memory little: no ways to need less.)
  throw RankWentAway("data-parallel " + what + " failed on rank " + std::to_string(env_.rank) + " of " +
                         std::to_string(env_.world_size) + ": another rank stopped, hung past train.dist_timeout_s or "
                         "could not be reached (" + detail + ")" + (progress.text.empty() ? "" : "; " + progress.text) +
                         memory + ". Each rank's own log says why; the run is resumable from its last checkpoint",
                     !memory.empty() && !device_.is_cuda());
}

bool DataParallel::store_answers() const {
  try {
    group_->store->check({"progress/0"});
    return true;
  } catch (...) {
    return false;
  }
}

std::string DataParallel::backend() const { return device_.is_cuda() ? "nccl" : "gloo"; }

void DataParallel::average_gradients(const std::vector<torch::Tensor>& params) {
  torch::NoGradGuard no_grad;
  // Buckets of consecutive tensors, flattened, reduced together, copied back.
  std::vector<std::vector<torch::Tensor>> buckets(1);
  int64_t bytes = 0;
  for (const auto& p : params) {
    auto& grad = const_cast<torch::Tensor&>(p).mutable_grad();
    if (!grad.defined()) grad = torch::zeros_like(p);
    const int64_t size = grad.numel() * static_cast<int64_t>(grad.element_size());
    if (bytes > 0 && bytes + size > kBucketBytes) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().push_back(grad);
    bytes += size;
  }
  std::vector<torch::Tensor> flats;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  try {
    for (auto& bucket : buckets) {
      if (bucket.empty()) continue;
      std::vector<torch::Tensor> flat{torch::cat(
          [&] {
            std::vector<torch::Tensor> parts;
            for (auto& g : bucket) parts.push_back(g.reshape({-1}));
            return parts;
          }())};
      works.push_back(group_->group->allreduce(flat));
      flats.push_back(flat.front());
    }
    for (auto& w : works) w->wait();
  } catch (...) {
    rethrow_collective_error("gradient all-reduce");
  }
  size_t b = 0;
  for (auto& bucket : buckets) {
    if (bucket.empty()) continue;
    auto flat = flats[b++].div_(static_cast<double>(env_.world_size));
    int64_t offset = 0;
    for (auto& g : bucket) {
      g.copy_(flat.narrow(0, offset, g.numel()).view(g.sizes()));
      offset += g.numel();
    }
  }
}

// NCCL reduces device tensors only: host tensors travel through the device and back.
torch::Tensor DataParallel::on_backend(const torch::Tensor& t) const {
  return device_.is_cuda() && !t.is_cuda() ? t.to(device_) : t;
}

struct DataParallel::Overlap {
  struct Bucket {
    std::vector<size_t> members;         // indices into params
    torch::Tensor flat;                  // [sum of numels]
    std::vector<torch::Tensor> views;    // one per member, shaped like it
    size_t pending = 0;                  // members whose gradient has not arrived
    c10::intrusive_ptr<c10d::Work> work;
  };
  c10::intrusive_ptr<CollectiveBackend> group;
  std::vector<torch::Tensor> params;
  std::vector<Bucket> buckets;
  std::vector<std::pair<size_t, size_t>> slot;  // param -> (bucket, member)
  std::vector<bool> arrived;
  size_t next = 0;  // the next bucket to start
  bool armed = false, twice = false;
  std::mutex mutex;

  // Starts every complete bucket from `next` on, in order (caller holds the mutex).
  void start_ready() {
    while (next < buckets.size() && buckets[next].pending == 0) {
      std::vector<torch::Tensor> one{buckets[next].flat};
      buckets[next].work = group->allreduce(one);
      ++next;
    }
  }

  // A gradient of params[i] from the backward pass, before autograd adds it to .grad.
  void arrive(size_t i, const torch::Tensor& grad) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!armed) return;
    if (arrived[i]) {
      twice = true;
      return;
    }
    arrived[i] = true;
    auto& bucket = buckets[slot[i].first];
    torch::NoGradGuard no_grad;
    auto& view = bucket.views[slot[i].second];
    view.copy_(grad);
    const auto& accumulated = params[i].grad();
    if (accumulated.defined()) view.add_(accumulated);  // earlier micro-batches' part
    --bucket.pending;
    start_ready();
  }
};

void DataParallel::watch_gradients(const std::vector<torch::Tensor>& params) {
  auto o = std::make_shared<Overlap>();
  o->group = group_->group;
  o->params = params;
  o->slot.resize(params.size());
  o->arrived.assign(params.size(), false);
  int64_t bytes = 0;
  for (size_t n = params.size(); n-- > 0;) {
    const auto& p = params[n];
    const int64_t size = p.numel() * static_cast<int64_t>(p.element_size());
    if (o->buckets.empty() || (bytes > 0 && bytes + size > kBucketBytes)) {
      o->buckets.emplace_back();
      bytes = 0;
    }
    auto& bucket = o->buckets.back();
    o->slot[n] = {o->buckets.size() - 1, bucket.members.size()};
    bucket.members.push_back(n);
    bytes += size;
  }
  for (auto& bucket : o->buckets) {
    int64_t total = 0;
    for (size_t n : bucket.members) total += params[n].numel();
    bucket.flat = torch::zeros({total}, params[bucket.members.front()].options().requires_grad(false));
    int64_t offset = 0;
    for (size_t n : bucket.members) {
      bucket.views.push_back(bucket.flat.narrow(0, offset, params[n].numel()).view(params[n].sizes()));
      offset += params[n].numel();
    }
    bucket.pending = bucket.members.size();
  }
  std::weak_ptr<Overlap> weak = o;
  for (size_t n = 0; n < params.size(); ++n) {
    torch::Tensor p = params[n];
    p.register_hook([weak, n](const torch::Tensor& grad) {
      if (auto shared = weak.lock()) shared->arrive(n, grad);
    });
  }
  overlap_ = std::move(o);
}

void DataParallel::arm_gradients() {
  if (!overlap_) return;
  std::lock_guard<std::mutex> lock(overlap_->mutex);
  overlap_->armed = true;
}

bool DataParallel::finish_gradients() {
  Overlap& o = *overlap_;
  {
    std::lock_guard<std::mutex> lock(o.mutex);
    o.armed = false;
    torch::NoGradGuard no_grad;
    // Tensors the backward pass gave no gradient: what they hold (or zero).
    for (size_t n = 0; n < o.params.size(); ++n) {
      if (o.arrived[n]) continue;
      auto& bucket = o.buckets[o.slot[n].first];
      auto& view = bucket.views[o.slot[n].second];
      const auto& g = o.params[n].grad();
      if (g.defined()) view.copy_(g);
      else view.zero_();
      if (bucket.work) o.twice = true;  // its bucket started without it: cannot happen unless the graph changed
      else --bucket.pending;
    }
    o.start_ready();
  }
  try {
    for (auto& bucket : o.buckets)
      if (bucket.work) bucket.work->wait();
  } catch (...) {
    rethrow_collective_error("gradient all-reduce");
  }
  const bool overlapped = !o.twice;
  {
    torch::NoGradGuard no_grad;
    for (auto& bucket : o.buckets) {
      if (overlapped) {
        bucket.flat.div_(static_cast<double>(env_.world_size));
        for (size_t k = 0; k < bucket.members.size(); ++k) {
          auto& grad = o.params[bucket.members[k]].mutable_grad();
          if (grad.defined()) grad.copy_(bucket.views[k]);
          else grad = bucket.views[k].clone();
        }
      }
      bucket.work.reset();
      bucket.pending = bucket.members.size();
    }
    std::fill(o.arrived.begin(), o.arrived.end(), false);
    o.next = 0;
    o.twice = false;
  }
  if (!overlapped) average_gradients(o.params);
  return overlapped;
}

void DataParallel::all_reduce_sum_(torch::Tensor& t) {
  auto x = on_backend(t);
  try {
    std::vector<torch::Tensor> tensors{x};
    group_->group->allreduce(tensors)->wait();
  } catch (...) {
    rethrow_collective_error("all-reduce");
  }
  if (!x.is_same(t)) t.copy_(x);
}

void DataParallel::all_reduce_sum_on_host_(torch::Tensor& t) {
  TORCH_CHECK(!t.is_cuda(), "all_reduce_sum_on_host_ takes a host tensor");
  try {
    std::vector<torch::Tensor> tensors{t};
    group_->host->allreduce(tensors)->wait();
  } catch (...) {
    rethrow_collective_error("all-reduce");
  }
}

void DataParallel::all_reduce_mean_(torch::Tensor& t) {
  all_reduce_sum_(t);
  t.div_(static_cast<double>(env_.world_size));
}

void DataParallel::broadcast_(std::vector<torch::Tensor>& tensors, int root) {
  c10d::BroadcastOptions options;
  options.rootRank = root;
  try {
    for (auto& t : tensors) {
      auto x = on_backend(t);
      std::vector<torch::Tensor> one{x};
      group_->group->broadcast(one, options)->wait();
      if (!x.is_same(t)) t.copy_(x);
    }
  } catch (...) {
    rethrow_collective_error("broadcast");
  }
}

std::vector<torch::Tensor> DataParallel::all_gather(const torch::Tensor& t) {
  auto x = on_backend(t).contiguous();
  std::vector<std::vector<torch::Tensor>> outputs(1);
  for (int r = 0; r < env_.world_size; ++r) outputs[0].push_back(torch::empty_like(x));
  std::vector<torch::Tensor> inputs{x};
  try {
    group_->group->allgather(outputs, inputs)->wait();
  } catch (...) {
    rethrow_collective_error("all-gather");
  }
  for (auto& o : outputs[0]) o = o.to(t.device());
  return outputs[0];
}

std::vector<std::vector<std::string>> DataParallel::all_gather_texts(const std::vector<std::string>& texts) {
  // Each rank's texts as one byte buffer (8-byte length, then the bytes, per text), padded to the
  // longest buffer: all-gather needs one shape on every rank.
  std::vector<uint8_t> bytes;
  for (const auto& text : texts) {
    const uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<uint8_t>(n >> (8 * i)));
    bytes.insert(bytes.end(), text.begin(), text.end());
  }
  auto size = torch::tensor({static_cast<int64_t>(bytes.size())}, torch::TensorOptions().dtype(torch::kLong));
  const auto sizes = all_gather(size);
  int64_t longest = 0;
  for (const auto& s : sizes) longest = std::max(longest, s.item<int64_t>());
  auto mine = torch::zeros({std::max<int64_t>(longest, 1)}, torch::TensorOptions().dtype(torch::kUInt8));
  std::copy(bytes.begin(), bytes.end(), mine.data_ptr<uint8_t>());
  const auto all = all_gather(mine);
  std::vector<std::vector<std::string>> out(all.size());
  for (size_t r = 0; r < all.size(); ++r) {
    const auto buffer = all[r].contiguous();
    const uint8_t* p = buffer.data_ptr<uint8_t>();
    const int64_t used = sizes[r].item<int64_t>();
    for (int64_t at = 0; at + 8 <= used;) {
      uint64_t n = 0;
      for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(p[at + i]) << (8 * i);
      at += 8;
      out[r].emplace_back(reinterpret_cast<const char*>(p + at), static_cast<size_t>(n));
      at += static_cast<int64_t>(n);
    }
  }
  return out;
}

void DataParallel::barrier() {
  try {
    group_->group->barrier()->wait();
  } catch (...) {
    rethrow_collective_error("barrier");
  }
}

void end_when_orphaned(std::chrono::milliseconds after) {
  static std::once_flag started;
  std::call_once(started, [after] {
    std::thread([parent = ::getppid(), after] {
      while (::getppid() == parent) std::this_thread::sleep_for(std::chrono::seconds(1));
      std::this_thread::sleep_for(after);  // (its own stop, at a step boundary, has this long)
      std::fprintf(stderr, "ganpo: this rank's launcher is gone and it did not stop within train.dist_timeout_s: "
                           "ending it\n");
      std::_Exit(143);
    }).detach();
  });
}

}  // namespace ganpo
