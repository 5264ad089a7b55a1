// Buffered sequential I/O for the store's streamed formats (dump, checkpoint): a reader that parses
// an fd from offset 0 without per-record system calls or allocations, and a writer that batches
// records into 1 MiB pwrites at increasing offsets (headers are pwritten separately, at the end).
//
// Thread-safety: none; one reader or writer per stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "stores/common/status.h"

namespace modelfs::embeddings {

class FileReader {
 public:
  explicit FileReader(int fd, size_t buffer_size = 1 << 20);

  // The next n bytes, valid until the next call. InvalidArgument "<what>: truncated ..." when the
  // file ends first; IOError when reading fails.
  Result<const char*> Read(size_t n, const std::string& what);
  // True when every byte has been consumed.
  Result<bool> AtEnd();
  // Bytes consumed so far.
  uint64_t offset() const { return consumed_; }

 private:
  // Reads until at least n bytes are buffered or the file ends.
  Status Fill(size_t n);

  const int fd_;
  std::vector<char> buf_;
  size_t begin_ = 0;       // first unconsumed byte in buf_
  size_t end_ = 0;         // one past the last buffered byte
  uint64_t file_pos_ = 0;  // file offset of buf_[end_]
  uint64_t consumed_ = 0;
  bool eof_ = false;
};

class FileWriter {
 public:
  FileWriter(int fd, uint64_t offset, size_t buffer_size = 1 << 20);

  // A buffer for the next n bytes, to be filled by the caller before the next call; nullptr when an
  // earlier write failed (status() says why).
  char* Claim(size_t n) {
    if (n > buf_.size() - len_ && !MakeRoom(n)) return nullptr;
    char* p = buf_.data() + len_;
    len_ += n;
    return p;
  }
  // Writes what is buffered; returns the first error of the stream.
  Status Flush();
  const Status& status() const { return status_; }
  // File offset just past everything claimed so far.
  uint64_t end_offset() const { return offset_ + len_; }

 private:
  bool MakeRoom(size_t n);

  const int fd_;
  std::vector<char> buf_;
  size_t len_ = 0;
  uint64_t offset_;  // file offset of buf_[0]
  Status status_;
};

// Cuts a regular file at `size` when it is longer (a stream written over an older, longer file).
Status TruncateIfLonger(int fd, uint64_t size);

}  // namespace modelfs::embeddings
