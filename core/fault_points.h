// Named points where a crash-safety test makes this process die on purpose.
//
// With GANPO_KILL_AT=NAME (or NAME:N) in the environment, the N-th time (default the first)
// the process reaches fault_point(NAME) it sends itself SIGKILL: no destructor, flush or
// handler runs, exactly as when the machine loses power or the OOM killer strikes
// (GANPO_OOM_KILL_AT=NAME[:N] does that as the OOM killer does, counting itself first where the
// launcher reads the kernel's count of such kills: core/oom_kill_count.h). Without
// the variable fault_point() costs two atomic loads. GANPO_HANG_AT=NAME[:N] makes the process
// stop there instead and never continue (a hung rank: it still runs signal handlers, but no
// code after the point), GANPO_FAIL_AT=NAME[:N] makes fault_point throw ganpo::Error there (a run
// that fails with a message, as one out of memory does; for the trainer's own points, step.done and
// checkpoint.*), GANPO_OOM_AT=NAME[:N] throws std::bad_alloc there (an allocation refused: the
// trainer's out-of-memory path, train.auto_find_batch_size's included), and GANPO_FAULT_RANK=R
// arms any of them only in the data-parallel process whose RANK is R (NAME[:N]@R does that for
// one variable, so ranks can fail in different ways; a process takes the first variable armed
// for it, in the order above). A point fails once: a
// stage that goes on passes it again, and so do ranks their launcher starts again (it leaves
// these variables out of their environment then). The points:
//   step.done                  after an optimizer step, before anything about it is recorded
//   step.longest_rows          the try of the longest training rows after a stage's first step
//                              is about to run (the run's record says so, as the OOM killer finds it)
//   checkpoint.files_written   a checkpoint's files are in NAME.tmp, its marker not yet
//   checkpoint.marker_written  the marker is written, NAME.tmp not yet renamed
//   checkpoint.renamed         the folder has its final name, its row is not yet in the store
//   store.batch_written        the recorder's transaction holds a batch, not yet committed
//   evaluation.batch           a batch of held-out pairs (or SFT rows) is about to be scored
//   samples.batch              a model's live samples are about to be generated
//   generate.batch             `ganpo generate` is about to sample a batch of prompts
//   judge.batch                a judge evaluation is about to sample a batch of its prompts
// tests/app/crash_safety_test.cpp kills a real worker at step.done, step.longest_rows, the
// checkpoint.* points and store.batch_written (the CLI and data-parallel tests make memory run
// out, or a rank stop, at the others); packaging/kill-soak.sh kills one at random moments.
#pragma once

namespace ganpo {

void fault_point(const char* name);

}  // namespace ganpo
