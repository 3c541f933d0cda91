#include "core/data_parallel.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>

#include "core/error.h"

namespace ganpo {
namespace {

constexpr int64_t kBucketBytes = 25 * 1024 * 1024;  // DDP's default bucket_cap_mb

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

// c10d and Gloo errors carry backtraces or transport details; say what happened and what to do.
[[noreturn]] void rethrow_collective_error(const std::string& what, const DistributedEnv& env) {
  const std::string detail = current_error_text();
  throw Error("data-parallel " + what + " failed on rank " + std::to_string(env.rank) + " of " +
              std::to_string(env.world_size) + ": another rank stopped, hung past train.dist_timeout_s or could "
              "not be reached (" + detail + "); its own log says why. The run is resumable from its last checkpoint");
}

}  // namespace

struct DataParallel::Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> group;
};

DataParallel::DataParallel(const DistributedEnv& env, const torch::Device& device, std::chrono::milliseconds timeout)
    : env_(env), device_(device), group_(std::make_unique<Group>()) {
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(env.master_port);
    store_options.isServer = env.rank == 0;
    store_options.numWorkers = env.world_size;
    store_options.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, store_options);
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
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      // GLOO_SOCKET_IFNAME picks the network interface as in PyTorch; otherwise the address the
      // host name resolves to (loopback on a single machine without one).
      if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      else
        options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      options->threads = 1;  // the training threads need the cores; one transport thread suffices
      group_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(group_->store, env.rank, env.world_size, options);
    }
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
    rethrow_collective_error("gradient all-reduce", env_);
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

void DataParallel::all_reduce_sum_(torch::Tensor& t) {
  auto x = on_backend(t);
  try {
    std::vector<torch::Tensor> tensors{x};
    group_->group->allreduce(tensors)->wait();
  } catch (...) {
    rethrow_collective_error("all-reduce", env_);
  }
  if (!x.is_same(t)) t.copy_(x);
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
    rethrow_collective_error("broadcast", env_);
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
    rethrow_collective_error("all-gather", env_);
  }
  for (auto& o : outputs[0]) o = o.to(t.device());
  return outputs[0];
}

void DataParallel::barrier() {
  try {
    group_->group->barrier()->wait();
  } catch (...) {
    rethrow_collective_error("barrier", env_);
  }
}

}  // namespace ganpo
