// train.auto_find_batch_size in a data-parallel run: the ranks cannot agree on a smaller batch
// inside a step (the others wait in the gradients' all-reduce for the rank that ran out), so
// the launcher starts them all again, as torchrun's elastic restarts do.
//
//   1. A rank that runs out of memory, where a smaller batch is left, writes a request into the
//      folder its launcher named (GANPO_RELAUNCH_DIR): the batches to go on with and the
//      checkpoint to go on from. It then ends with kRelaunchExitCode; the others' collectives
//      fail, they find the request and end so too, without failing the run (one that does not
//      end soon is ended by its process's RelaunchWatch, core/relaunch_watch.h).
//   2. The launcher, once every rank has ended, starts them again from that checkpoint, with
//      GANPO_BATCHES_FOUND = "train,accumulation,eval": each rank trains with those batches and
//      counts its steps from the config's (the rows of an optimizer step stay what was asked).
//   3. On the CPU the system's out-of-memory killer ends a rank without a word, so it cannot ask.
//      While a rank tries its longest training rows after step 1 (where memory a later batch
//      would run out of runs out), it leaves a standing request: what it would ask. Its launcher,
//      finding it ended by SIGKILL, takes that as its request (take_standing_request); its peers,
//      whose collectives fail, find a standing request of another rank (which may still be
//      trying, hung, or ended otherwise: standing_request_of_another) and wait a little for the
//      launcher to take it; where it does, they end as in 1, else they fail as they would have.
// Only a launcher that starts every rank, on one host, sets GANPO_RELAUNCH_DIR (`ganpo train`
// with train.num_processes, workspace runs, `ganpo launch` without --nnodes); a rank without it
// refuses the setting. Torch-free: the launcher reads the requests too.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"

namespace ganpo {

inline constexpr int kRelaunchExitCode = 75;  // EX_TEMPFAIL: start me again
inline constexpr const char* kRelaunchDirVariable = "GANPO_RELAUNCH_DIR";
inline constexpr const char* kBatchesFoundVariable = "GANPO_BATCHES_FOUND";
inline constexpr const char* kRelaunchReasonVariable = "GANPO_RELAUNCH_REASON";  // "rank 1 ran out of memory: ..."

// What a rank's failed collective throws where another rank asked to be started again: this
// rank ends too, without failing the run (the launcher starts them all again).
class RelaunchRequested : public Error {
public:
  using Error::Error;
};

struct RelaunchRequest {
  int rank = 0;
  // per_device_train_batch_size, gradient_accumulation_steps, per_device_eval_batch_size
  std::vector<int64_t> batches;
  std::string resume_from;  // the checkpoint to go on from ("" = the stage's start)
  std::string change;       // "2 rows a micro-batch x 2 accumulation steps (...)", for the log
  std::string reason;       // where this rank ran out and LibTorch's words, for the other ranks' logs
};

// Written whole (a temporary file renamed into place) as rank<R>.json in `dir`.
void write_relaunch_request(const std::string& dir, const RelaunchRequest& request);
// The request of the lowest rank that wrote one (none where none did or none can be read).
std::optional<RelaunchRequest> read_relaunch_request(const std::string& dir);
// A rank's standing request (3 above), as standing-rank<R>.json, and its removal.
void write_standing_request(const std::string& dir, const RelaunchRequest& request);
void remove_standing_request(const std::string& dir, int rank);
// Makes `rank`'s standing request its request (written as rank<R>.json beside it); false where
// it left none or it cannot be written.
bool take_standing_request(const std::string& dir, int rank);
// The standing request of the lowest rank other than `rank` that left one.
std::optional<RelaunchRequest> standing_request_of_another(const std::string& dir, int rank);
// Removes the requests (rank<R>.json, standing-rank<R>.json and their temporary files); what
// else ranks left in the folder for their new start stays (rank 0's precomputed reference
// log-probs).
void clear_relaunch_requests(const std::string& dir);

// "4,2,8" <-> {4, 2, 8}; parse_batches throws ConfigError unless three positive integers.
std::string format_batches(const std::vector<int64_t>& batches);
std::vector<int64_t> parse_batches(const std::string& text, const std::string& where);

}  // namespace ganpo
