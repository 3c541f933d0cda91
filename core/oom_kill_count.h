// How many processes the kernel's out-of-memory killer has ended since the machine started:
// /proc/vmstat's oom_kill (Linux 4.13 on). A launcher whose rank was ended by SIGKILL compares it
// with the count when the rank started: where it went up, its message says the kernel's killer
// did it (a count over the whole machine: another process's kill counts too). Where it did not,
// nothing follows: a user-space killer (systemd-oomd, earlyoom) is not counted.
//
// GANPO_VMSTAT_FOR_TESTS names a file read in place of /proc/vmstat; the fault point
// GANPO_OOM_KILL_AT (core/fault_points.h) counts itself there before it ends its process, as the
// kernel counts the processes it ends.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace ganpo {

inline constexpr const char* kVmstatForTestsVariable = "GANPO_VMSTAT_FOR_TESTS";

// The count; none where the file cannot be read or has no oom_kill line (an older kernel).
std::optional<int64_t> oom_kill_count();

// `vmstat`'s text with its oom_kill count one higher (a line added where it has none).
std::string with_one_more_oom_kill(const std::string& vmstat);

}  // namespace ganpo
