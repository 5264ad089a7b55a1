#include "stores/embeddings/record_io.h"

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "stores/common/file_util.h"

namespace modelfs::embeddings {

FileReader::FileReader(int fd, size_t buffer_size) : fd_(fd), buf_(buffer_size) {}

Status FileReader::Fill(size_t n) {
  if (end_ - begin_ >= n) return Status::Ok();
  // Move the unconsumed tail to the front, and grow when one record is larger than the buffer.
  if (begin_ > 0) {
    memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (buf_.size() < n) buf_.resize(n);
  while (end_ < n && !eof_) {
    ASSIGN_OR_RETURN(size_t got, PreadFull(fd_, buf_.data() + end_, buf_.size() - end_,
                                           static_cast<off_t>(file_pos_)));
    if (got == 0) eof_ = true;
    end_ += got;
    file_pos_ += got;
  }
  return Status::Ok();
}

Result<const char*> FileReader::Read(size_t n, const std::string& what) {
  RETURN_IF_ERROR(Fill(n));
  if (end_ - begin_ < n) {
    return InvalidArgument(what + ": truncated (the file ends at byte " +
                           std::to_string(consumed_ + (end_ - begin_)) + ", " + std::to_string(n) +
                           " bytes needed from byte " + std::to_string(consumed_) + ")");
  }
  const char* p = buf_.data() + begin_;
  begin_ += n;
  consumed_ += n;
  return p;
}

Result<bool> FileReader::AtEnd() {
  RETURN_IF_ERROR(Fill(1));
  return end_ == begin_;
}

FileWriter::FileWriter(int fd, uint64_t offset, size_t buffer_size)
    : fd_(fd), buf_(buffer_size), offset_(offset) {}

bool FileWriter::MakeRoom(size_t n) {
  if (!Flush().ok()) return false;
  if (buf_.size() < n) buf_.resize(n);
  return true;
}

Status FileWriter::Flush() {
  if (!status_.ok()) return status_;
  if (len_ == 0) return Status::Ok();
  status_ = PwriteFull(fd_, buf_.data(), len_, static_cast<off_t>(offset_));
  if (status_.ok()) {
    offset_ += len_;
    len_ = 0;
  }
  return status_;
}

Status TruncateIfLonger(int fd, uint64_t size) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoError("fstat", errno);
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) <= size) return Status::Ok();
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) return ErrnoError("ftruncate", errno);
  return Status::Ok();
}

}  // namespace modelfs::embeddings
