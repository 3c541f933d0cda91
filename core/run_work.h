// A rough count of the arithmetic a run does, to carry one run's measured speed over to other
// runs planned on the same machine (the duration estimate of a study before it starts). It is a
// ratio model: runs of a similar kind compare well; its unit is not the FLOPs of any kernel.
//
//   tokens per step  T = batch x gradient_accumulation_steps x data.max_length (padded length)
//   sft              6 P T                  policy forward + backward (P policy parameters)
//   preference       6 P 2T + 2 P 2T        policy on chosen and rejected, frozen reference forward
//     + GANPO        6 Pc 3T' x 2 critics   critics on reference chosen / rejected and policy
//                                           latents, T' = T capped at critic_max_len per row
//   final judge      2 P x max_new_tokens x num_prompts x temperatures x 2 models (sampling,
//                    one token at a time), for preference stages that end with a judge evaluation
// Steps: train.max_steps, or num_train_epochs over the built-in task's examples (a data file's
// size is not known here: 4000 examples are assumed).
#pragma once

#include "core/config.h"

namespace ganpo {

struct RunWork {
  int64_t steps = 0;
  double train = 0;  // all steps
  double eval = 0;   // the final judge evaluation
  double total() const { return train + eval; }
};

RunWork run_work(const RunConfig& config);

// The same 2-core CPU figure for runs when nothing measured is at hand: work per second of the
// demo pipeline's runs on this project's CI-class machine (see run_work.cpp for the measurement).
double reference_work_per_second();

}  // namespace ganpo
