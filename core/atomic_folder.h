// Folders that appear whole or not at all: checkpoints and final models.
//
// write_folder_atomically(dir, write) lets write() fill DIR.tmp, then flushes every file and
// folder in it to disk (fsync), writes the completion marker DIR.tmp/complete.json last (the
// size of every file), flushes it, renames DIR.tmp to DIR (a DIR already there is first renamed
// to DIR.old and removed afterwards) and flushes the parent folder. A crash at any moment
// leaves the old DIR, the new one, or no DIR (DIR.tmp / DIR.old beside it, removed by the next
// write); never a DIR that lacks its marker. When write() or any flush fails (a full disk),
// DIR.tmp is removed, DIR is left as it was and the error says how much the folder needed.
//
// incomplete_reason(dir) says why a folder is not one of ours that was completed (no marker,
// a file missing, shorter or longer than the marker says), or "" when it is complete. Resume,
// the checkpoint list, the playground and the CLI use only complete folders. A checkpoint
// written before markers existed (its meta.json has no "format" key, its name no .tmp / .old)
// counts as complete: it was renamed into place whole, only without the flushes.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace ganpo {

inline constexpr const char* kCompleteMarker = "complete.json";
// meta.json's "format" in checkpoints written with a marker; older ones have no "format".
inline constexpr int kCheckpointFormat = 2;

void write_folder_atomically(const std::string& dir, const std::function<void(const std::string&)>& write);

// "" when dir holds a valid complete.json whose files all exist with their sizes.
std::string incomplete_reason(const std::string& dir);

// Throws ModelFileError "DIR is not a complete checkpoint: <reason>; <advice>" unless
// incomplete_reason(dir) is empty.
void require_complete_checkpoint(const std::string& dir, const std::string& advice);

// `dir` where it is complete, else the newest complete checkpoint-<step> folder beside it of an
// earlier step (a run's checkpoint still being written when its process ended); "" where none
// is ("" stays "").
std::string complete_checkpoint_at_or_before(const std::string& dir);

// True when dir looks like a folder this program wrote as a checkpoint (it has meta.json),
// so it must carry the completion marker to be used.
bool is_written_checkpoint(const std::string& dir);

// Flushes a file or folder to disk (fsync); throws ganpo::Error naming the path and errno.
void sync_path(const std::string& path);

}  // namespace ganpo
