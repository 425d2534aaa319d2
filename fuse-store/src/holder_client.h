// The daemon's side of the connection holder (fuse-store/helper/holder.c): hand a mount's
// /dev/fuse files to it, or take them over from it. Messages: {u32 type, u32 length} + payload,
// fds with SCM_RIGHTS.
#pragma once
#include <string>
#include <vector>

namespace ephemera {

// Sends HOLD with `fds` and `blob`; on OKAY keeps the connection open in *conn (closing it without
// HolderDone tells the holder the daemon died). 0 or errno, with a message in *err.
int HolderHold(const std::string& socket_path, const std::string& blob, const std::vector<int>& fds, int* conn,
               std::string* err);
// Sends TAKE; on FDS_ returns the held fds (dups, close-on-exec) and the blob, and the connection
// in *conn (this process is now the owner). ENOENT or ECONNREFUSED: no holder listens there.
// EBUSY: another daemon still owns the connection.
int HolderTake(const std::string& socket_path, int timeout_ms, std::vector<int>* fds, std::string* blob, int* conn,
               std::string* err);
// A clean unmount: the holder releases everything and exits. Closes conn.
void HolderDone(int conn);

}  // namespace ephemera
