// A file being written before it reaches a store: an unlinked-on-destruction file in a staging
// directory on the same filesystem as the store's data, so that a store commits it by rename (no copy).
//
// Ownership: the StagedFile owns the path until MoveTo() succeeds; after that the destination owns it
// and the StagedFile is empty (consumed). The fd stays open and valid after MoveTo() (it now refers to
// the committed file), which lets a reader keep reading what was committed.
// Thread-safety: none; callers serialize access to one StagedFile.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "stores/common/scoped_fd.h"
#include "stores/common/status.h"

namespace modelfs {

class StagedFile {
 public:
  // Creates an empty file with a fresh unique name in dir.
  static Result<std::unique_ptr<StagedFile>> Create(const std::string& dir);
  // Creates one in dir holding everything read from `input`, a file path or "-" for stdin (pipes
  // work): what the CLI's put commands store.
  static Result<std::unique_ptr<StagedFile>> CreateFrom(const std::string& dir, const std::string& input);
  ~StagedFile();
  StagedFile(const StagedFile&) = delete;
  StagedFile& operator=(const StagedFile&) = delete;

  int fd() const { return fd_.get(); }
  // The staging path. After MoveTo() the file lives at the destination instead.
  const std::string& path() const { return path_; }
  bool consumed() const { return consumed_; }
  Result<uint64_t> Size() const;
  // Renames the file to dest (same filesystem). On success the StagedFile is consumed.
  Status MoveTo(const std::string& dest);
  // Undoes a successful MoveTo() (for a store whose commit failed after the rename): renames the
  // file back to path() and makes the StagedFile unconsumed again. Refuses to replace a file that
  // took the staging name meanwhile; then the file stays at the destination and the StagedFile
  // stays consumed.
  Status MoveBack();

 private:
  StagedFile(std::string path, ScopedFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  std::string path_;
  ScopedFd fd_;
  bool consumed_ = false;
  std::string moved_to_;  // where MoveTo() put the file, while consumed_
};

}  // namespace modelfs
