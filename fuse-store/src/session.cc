// The N-API surface: a Session is one file system, mounted (a Transport) or not (unit tests feed
// it request bytes through dispatch()). Only control crosses into JavaScript; no request does.
#include <sys/stat.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include "addon.h"
#include "errno_names.h"
#include "fs.h"
#include "holder_client.h"
#include "transport.h"
#include <unistd.h>

namespace ephemera {
namespace {

class BufferSink : public ReplySink {
 public:
  std::vector<uint8_t> bytes;
  bool sent = false;
  int Send(const iovec* iov, int count) override {
    sent = true;
    for (int i = 0; i < count; ++i) {
      auto* p = static_cast<const uint8_t*>(iov[i].iov_base);
      bytes.insert(bytes.end(), p, p + iov[i].iov_len);
    }
    return 0;
  }
};

// Options cross into C++ here, so a wrong type or an out-of-range value is refused here: a
// default taken silently hid mistakes (`sizeQuota: "64M"` used to mean 0, unlimited). An absent
// option (undefined) takes its default; null is a wrong type. The error names the option and what
// it got, with code E_BAD_OPTION.
std::string Describe(const Napi::Value& v) {
  if (v.IsString()) {
    std::string s = v.As<Napi::String>().Utf8Value();
    if (s.size() > 40) s = s.substr(0, 40) + "...";
    return "the string \"" + s + "\"";
  }
  if (v.IsNumber()) return "the number " + v.ToString().Utf8Value();
  if (v.IsBoolean()) return std::string("the boolean ") + (v.As<Napi::Boolean>().Value() ? "true" : "false");
  if (v.IsNull()) return "null";
  if (v.IsArray()) return "an array";
  if (v.IsFunction()) return "a function";
  if (v.IsObject()) return "an object";
  return "a value of another type";
}

// The one shape of an option error: code E_BAD_OPTION, and the option's name when there is one.
[[noreturn]] void ThrowOptionError(Napi::Env env, const std::string& msg, const char* key, bool range) {
  Napi::Error e = range ? Napi::Error(Napi::RangeError::New(env, msg)) : Napi::Error(Napi::TypeError::New(env, msg));
  e.Set("code", Napi::String::New(env, "E_BAD_OPTION"));
  if (key != nullptr) e.Set("option", Napi::String::New(env, key));
  throw e;
}

[[noreturn]] void ThrowBadOption(Napi::Env env, const char* where, const char* key, const std::string& want,
                                 const Napi::Value& got, bool range) {
  ThrowOptionError(env, std::string(where) + " option " + key + " must be " + want + ", got " + Describe(got), key, range);
}

// The one integer check of options and arguments: finite, whole, within [min, max].
bool IsIntegerIn(double d, double min, double max) { return std::isfinite(d) && std::trunc(d) == d && d >= min && d <= max; }

std::string IntegerRange(double min, double max) {
  char buf[96];
  snprintf(buf, sizeof buf, "an integer in %.0f..%.0f", min, max);
  return buf;
}

// Positional arguments get the same treatment as options: a wrong type is refused with the call
// and the argument named (an `ino` of "12" used to become 0 and a timeout of "5s" the default).
// Absent (undefined) takes the default where there is one; `option` names the argument.
[[noreturn]] void ThrowBadArg(Napi::Env env, const char* call, const char* name, const std::string& want,
                              const Napi::Value& got, bool range) {
  ThrowOptionError(env, std::string(call) + " argument " + name + " must be " + want + ", got " + Describe(got), name, range);
}

double IntegerArgument(const Napi::CallbackInfo& info, size_t i, const char* call, const char* name, double min,
                       double max, const double* def = nullptr) {
  Napi::Value v = i < info.Length() ? info[i] : info.Env().Undefined();
  if (v.IsUndefined() && def != nullptr) return *def;
  std::string want = IntegerRange(min, max);
  if (!v.IsNumber()) ThrowBadArg(info.Env(), call, name, want, v, false);
  double d = v.As<Napi::Number>().DoubleValue();
  if (!IsIntegerIn(d, min, max)) ThrowBadArg(info.Env(), call, name, want, v, true);
  return d;
}

// A hand-over or a takeover that waits longer than this is stuck, not slow.
constexpr double kMaxWaitMs = 600000.0;

uint64_t InoArgument(const Napi::CallbackInfo& info, size_t i, const char* call, const char* name = "ino") {
  return static_cast<uint64_t>(IntegerArgument(info, i, call, name, 1, kMaxSafeInteger));
}

int TimeoutArgument(const Napi::CallbackInfo& info, size_t i, const char* call, double def) {
  return static_cast<int>(IntegerArgument(info, i, call, "timeoutMs", 0, kMaxWaitMs, &def));
}

// A callback argument: a function, or absent (undefined) for none; anything else is refused.
Napi::Function CallbackArgument(const Napi::CallbackInfo& info, size_t i, const char* call, const char* name,
                                const Napi::Function& none) {
  Napi::Value v = i < info.Length() ? info[i] : info.Env().Undefined();
  if (v.IsUndefined()) return none;
  if (!v.IsFunction()) ThrowBadArg(info.Env(), call, name, "a function", v, false);
  return v.As<Napi::Function>();
}

// Reads `o`'s options, each once, and refuses any name not asked for (a typo, or an option of
// another call) once all are read.
class OptionReader {
 public:
  OptionReader(Napi::Env env, const Napi::Value& v, const char* where) : env_(env), where_(where) {
    if (v.IsUndefined()) {
      o_ = Napi::Object::New(env);
    } else if (v.IsObject() && !v.IsArray() && !v.IsFunction()) {
      o_ = v.As<Napi::Object>();
    } else {
      ThrowOptionError(env, std::string(where) + " options must be an object, got " + Describe(v), nullptr, false);
    }
  }

  std::string String(const char* key, const std::string& def) {
    Napi::Value v = Take(key);
    if (v.IsUndefined()) return def;
    if (!v.IsString()) ThrowBadOption(env_, where_, key, "a string", v, false);
    std::string s = v.As<Napi::String>().Utf8Value();
    if (s.find('\0') != std::string::npos) ThrowBadOption(env_, where_, key, "a string without NUL bytes", v, false);
    return s;
  }
  std::string Enum(const char* key, const std::string& def, std::initializer_list<const char*> allowed) {
    Napi::Value v = Take(key);
    if (v.IsUndefined()) return def;
    std::string want = "one of";
    for (const char* a : allowed) want += std::string(" \"") + a + "\"";
    if (!v.IsString()) ThrowBadOption(env_, where_, key, want, v, false);
    std::string s = v.As<Napi::String>().Utf8Value();
    for (const char* a : allowed)
      if (s == a) return s;
    ThrowBadOption(env_, where_, key, want, v, false);
  }
  bool Bool(const char* key, bool def) {
    Napi::Value v = Take(key);
    if (v.IsUndefined()) return def;
    if (!v.IsBoolean()) ThrowBadOption(env_, where_, key, "a boolean", v, false);
    return v.As<Napi::Boolean>().Value();
  }
  // An integer in [min, max] (max at most 2^53 - 1, where a JS number stops naming each integer).
  double Integer(const char* key, double def, double min, double max) {
    Napi::Value v = Take(key);
    if (v.IsUndefined()) return def;
    std::string want = IntegerRange(min, max);
    if (!v.IsNumber()) ThrowBadOption(env_, where_, key, want, v, false);
    double d = v.As<Napi::Number>().DoubleValue();
    if (!IsIntegerIn(d, min, max)) ThrowBadOption(env_, where_, key, want, v, true);
    return d;
  }
  // A finite number >= 0 (seconds).
  double NonNegative(const char* key, double def) {
    Napi::Value v = Take(key);
    if (v.IsUndefined()) return def;
    if (!v.IsNumber()) ThrowBadOption(env_, where_, key, "a finite number >= 0", v, false);
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d < 0) ThrowBadOption(env_, where_, key, "a finite number >= 0", v, true);
    return d;
  }
  // A byte count >= 0 that may be fractional (a scaled hint) or Infinity (no limit): floored,
  // and UINT64_MAX from 2^64 up.
  uint64_t Bytes(const char* key, uint64_t def) {
    Napi::Value v = Take(key);
    if (v.IsUndefined()) return def;
    if (!v.IsNumber()) ThrowBadOption(env_, where_, key, "a number of bytes >= 0", v, false);
    double d = v.As<Napi::Number>().DoubleValue();
    if (std::isnan(d) || d < 0) ThrowBadOption(env_, where_, key, "a number of bytes >= 0", v, true);
    return d >= 18446744073709551616.0 ? UINT64_MAX : static_cast<uint64_t>(d);
  }
  // Integers each in [min, max]; absent: empty.
  std::vector<int> Integers(const char* key, int min, int max) {
    Napi::Value v = Take(key);
    std::vector<int> out;
    if (v.IsUndefined()) return out;
    std::string want = "an array of integers in " + Fmt(min) + ".." + Fmt(max);
    if (!v.IsArray()) ThrowBadOption(env_, where_, key, want, v, false);
    Napi::Array arr = v.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      Napi::Value x = arr.Get(i);
      double d = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : NAN;
      if (!IsIntegerIn(d, min, max)) ThrowBadOption(env_, where_, key, want, x, !x.IsNumber() ? false : true);
      out.push_back(static_cast<int>(d));
    }
    return out;
  }
  // After every option was read: a name nobody asked for is a mistake the caller must see.
  void RejectUnknown() {
    Napi::Array keys = o_.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      std::string k = keys.Get(i).ToString().Utf8Value();
      if (std::find(taken_.begin(), taken_.end(), k) != taken_.end()) continue;
      if (o_.Get(k).IsUndefined()) continue;  // { x: undefined } is an absent option, as in JS
      ThrowOptionError(env_, std::string(where_) + ": unknown option " + k, k.c_str(), false);
    }
  }

 private:
  Napi::Value Take(const char* key) {
    taken_.emplace_back(key);
    return o_.Get(key);
  }
  static std::string Fmt(double d) {
    char buf[32];
    snprintf(buf, sizeof(buf), "%.0f", d);
    return buf;
  }
  Napi::Env env_;
  const char* where_;
  Napi::Object o_;
  std::vector<std::string> taken_;
};


Napi::Error ErrnoError(Napi::Env env, int err, const std::string& msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, "E_MOUNT"));
  return e;
}

Napi::Error PassthroughRefused(Napi::Env env, const std::string& why) {
  Napi::Error e = Napi::Error::New(env, "mode passthrough refused: " + why + "; mode auto would serve through the daemon instead");
  e.Set("code", Napi::String::New(env, "E_PASSTHROUGH_REFUSED"));
  return e;
}

class Session : public Napi::ObjectWrap<Session> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Session",
                       {
                           InstanceMethod("mount", &Session::Mount),
                           InstanceMethod("unmount", &Session::Unmount),
                           InstanceMethod("handOver", &Session::HandOver),
                           InstanceMethod("releaseStore", &Session::ReleaseStore),
                           InstanceMethod("dispatch", &Session::Dispatch),
                           InstanceMethod("counters", &Session::Counters),
                           InstanceMethod("usage", &Session::Usage),
                           InstanceMethod("inodeStats", &Session::InodeStats),
                           InstanceMethod("setQuotas", &Session::SetQuotas),
                           InstanceMethod("info", &Session::Info),
                           InstanceMethod("setPlacement", &Session::SetPlacement),
                           InstanceMethod("beginMove", &Session::BeginMove),
                           InstanceMethod("commitMove", &Session::CommitMove),
                           InstanceMethod("abortMove", &Session::AbortMove),
                           InstanceMethod("moveNow", &Session::MoveNow),
                           InstanceMethod("setOnClose", &Session::SetOnClose),
                           InstanceMethod("tierBytes", &Session::TierBytes),
                           InstanceMethod("syncDiskTier", &Session::SyncDiskTier),
                           InstanceMethod("setChargeAgent", &Session::SetChargeAgent),
                           InstanceMethod("hold", &Session::Hold),
                           InstanceMethod("adopt", &Session::Adopt),
                       });
  }

  explicit Session(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Session>(info) {
    Napi::Env env = info.Env();
    OptionReader o(env, info.Length() > 0 ? info[0] : env.Undefined(), "Session");
    FsOptions fo;
    fo.mode = o.Enum("mode", "auto", {"auto", "passthrough", "writeback", "none"});
    fo.root_mode = static_cast<uint32_t>(o.Integer("rootMode", 01777, 0, 07777));
    fo.root_uid = static_cast<uint32_t>(o.Integer("rootUid", 0, 0, 4294967294.0));
    fo.root_gid = static_cast<uint32_t>(o.Integer("rootGid", 0, 0, 4294967294.0));
    fo.entry_timeout_s = o.NonNegative("entryTimeout", fo.entry_timeout_s);
    fo.attr_timeout_s = o.NonNegative("attrTimeout", fo.attr_timeout_s);
    fo.answer_flush_enosys = o.Bool("flushEnosys", true);
    fo.xattrs = o.Bool("xattrs", false);
    fo.killpriv_v2 = o.Bool("killprivV2", true);
    fo.size_quota = static_cast<uint64_t>(o.Integer("sizeQuota", 0, 0, kMaxSafeInteger));
    fo.inode_quota = static_cast<uint64_t>(o.Integer("inodeQuota", 0, 0, kMaxSafeInteger));
    StoreOptions so;
    so.memory_dir = o.String("memoryDir", "");
    so.spill_dir = o.String("spillDir", "");
    // Restartable mounts: a journal, a locked store directory, or a dead daemon's store to adopt.
    journal_path_ = o.String("journal", "");
    so.adopt_name = o.String("adoptStore", "");
    so.memory_tier_sized = o.Bool("memoryTierSized", false);
    so.disk_tier_sized = o.Bool("diskTierSized", false);
    topts_.mountpoint = o.String("mountpoint", "");
    topts_.queues = static_cast<int>(o.Integer("queues", 2, 1, 16));
    topts_.allow_other = o.Bool("allowOther", false);
    topts_.transport = o.Enum("transport", "auto", {"auto", "device", "uring"});
    topts_.uring_depth = static_cast<int>(o.Integer("uringDepth", 8, 1, 64));
    o.RejectUnknown();
    so.lock = !journal_path_.empty() && so.adopt_name.empty();
    if (!journal_path_.empty() && so.memory_dir.empty())
      throw Napi::TypeError::New(env, "a journal needs a memoryDir (a memfd has no name a successor could find)");
    fs_ = std::make_unique<Filesystem>(fo, so);
    std::string what;
    if (int e = fs_->store_error(&what)) {
      fs_.reset();
      Napi::Error err = Napi::Error::New(env, "cannot prepare the " + what + ": " + strerror(e));
      err.Set("code", Napi::String::New(env, "E_STORE"));
      throw err;
    }
    mode_ = fo.mode;
  }

  ~Session() override {
    if (transport_) transport_->Stop();
    for (int fd : adopted_locks_) close(fd);
    if (holder_conn_ >= 0) close(holder_conn_);
    if (close_tsfn_active_) close_tsfn_.Release();
  }

 private:
  // mount(onStopped?) → Promise<info> resolved once INIT is answered.
  Napi::Value Mount(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Function noop = Napi::Function::New(env, [](const Napi::CallbackInfo&) {});
    Napi::Function on_stopped = CallbackArgument(info, 0, "mount", "onStopped", noop);
    if (topts_.mountpoint.empty()) throw Napi::Error::New(env, "this session has no mountpoint");
    if (transport_) throw Napi::Error::New(env, "already mounted");
    auto deferred = std::make_shared<Napi::Promise::Deferred>(env);
    // mode "passthrough" promises that no data byte goes through the daemon; it used to fall back to
    // the writeback cache without a word. Refused before mount(2) when the kernel would refuse every
    // BACKING_OPEN, and at INIT (below) when the kernel offers no passthrough.
    if (mode_ == "passthrough" && !MayPassthrough()) {
      deferred->Reject(PassthroughRefused(env, "this process lacks CAP_SYS_ADMIN in the initial user namespace, "
                                               "so the kernel refuses every backing file (FUSE_DEV_IOC_BACKING_OPEN)").Value());
      return deferred->Promise();
    }
    transport_ = std::make_unique<Transport>(fs_.get(), topts_);
    if (mode_ != "none" && mode_ != "writeback" && MayPassthrough()) fs_->set_backing_registry(transport_.get());
    ready_tsfn_ = Napi::ThreadSafeFunction::New(env, noop, "ephemera-ready", 0, 1);
    stopped_tsfn_ = Napi::ThreadSafeFunction::New(env, on_stopped, "ephemera-stopped", 0, 1);
    auto ready_fired = std::make_shared<std::atomic<bool>>(false);
    Session* self = this;
    transport_->set_on_ready([self, deferred, ready_fired]() {
      if (ready_fired->exchange(true)) return;
      self->ready_tsfn_.NonBlockingCall([self, deferred](Napi::Env env, Napi::Function) {
        if (self->mode_ == "passthrough" && !self->fs_->passthrough()) {
          // INIT is answered (the kernel waits for no reply to refuse), so the connection is torn
          // down here, on the JS thread: Stop() joins loops that never wait for this one.
          self->transport_->Stop();
          deferred->Reject(PassthroughRefused(env, "the kernel did not offer FUSE_PASSTHROUGH at INIT "
                                                   "(CONFIG_FUSE_PASSTHROUGH, Linux >= 6.9)").Value());
          return;
        }
        deferred->Resolve(self->InfoObject(env));
      });
      self->ready_tsfn_.Release();
    });
    transport_->set_on_stopped([self, deferred, ready_fired]() {
      if (!ready_fired->exchange(true)) {
        // The loop ended before INIT: the mount failed after mount(2) succeeded.
        self->ready_tsfn_.NonBlockingCall([deferred](Napi::Env env, Napi::Function) {
          Napi::Error e = Napi::Error::New(env, "the kernel closed the connection before INIT");
          e.Set("code", Napi::String::New(env, "E_MOUNT"));
          deferred->Reject(e.Value());
        });
        self->ready_tsfn_.Release();
      }
      self->stopped_tsfn_.NonBlockingCall([](Napi::Env env, Napi::Function cb) { cb.Call({}); });
      self->stopped_tsfn_.Release();
    });
    std::string err;
    if (!journal_path_.empty()) {
      if (int je = fs_->StartJournal(journal_path_, &err)) {
        transport_.reset();
        fs_->set_backing_registry(nullptr);
        ready_tsfn_.Release();
        stopped_tsfn_.Release();
        deferred->Reject(ErrnoError(env, je, err).Value());
        return deferred->Promise();
      }
    }
    int e = transport_->Mount(&err);
    if (e != 0) {
      transport_.reset();
      fs_->set_backing_registry(nullptr);
      ready_tsfn_.Release();
      stopped_tsfn_.Release();
      Napi::Error error = ErrnoError(env, e, err);
      deferred->Reject(error.Value());
    }
    return deferred->Promise();
  }

  // hold(socketPath, blob): hands the connection's /dev/fuse files and the store's locks to the
  // holder, which keeps them if this process dies. The blob says what a successor needs to know
  // before it can load the journal (paths, the number of device files).
  Napi::Value Hold(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!transport_ || journal_path_.empty()) throw Napi::Error::New(env, "hold() needs a mounted session with a journal");
    if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) throw Napi::TypeError::New(env, "hold(socketPath, blob)");
    std::vector<int> fds = transport_->device_fds();
    size_t fuse_count = fds.size();
    for (int fd : adopted_locks_) fds.push_back(fd);
    for (int fd : fs_store_locks()) fds.push_back(fd);
    std::string err;
    int conn = -1;
    // The first line says how many of the fds are device files (the rest are store locks).
    std::string blob = std::to_string(fuse_count) + "\n" + info[1].As<Napi::String>().Utf8Value();
    if (int e = HolderHold(info[0].As<Napi::String>().Utf8Value(), blob, fds, &conn, &err))
      throw ErrnoError(env, e, err);
    if (holder_conn_ >= 0) close(holder_conn_);
    holder_conn_ = conn;
    return Napi::Number::New(env, static_cast<double>(fuse_count));
  }

  // adopt({fds, fuseCount, conn}) → Promise<info>: serves a dead daemon's connection with the fds
  // a holder handed over (holderTake), after loading its journal; no INIT comes.
  Napi::Value Adopt(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (transport_) throw Napi::Error::New(env, "already mounted");
    if (journal_path_.empty()) throw Napi::Error::New(env, "adopt() needs a journal");
    Napi::Function noop = Napi::Function::New(env, [](const Napi::CallbackInfo&) {});
    Napi::Function on_stopped = CallbackArgument(info, 1, "adopt", "onStopped", noop);
    OptionReader o(env, info.Length() > 0 ? info[0] : env.Undefined(), "adopt");
    std::vector<int> fds = o.Integers("fds", 0, INT32_MAX);
    size_t fuse_count = static_cast<size_t>(o.Integer("fuseCount", 0, 0, static_cast<double>(fds.size())));
    // Owned by this session only once the takeover succeeds; on failure the caller closes them.
    int conn = static_cast<int>(o.Integer("conn", -1, -1, INT32_MAX));
    o.RejectUnknown();
    std::vector<int> fuse_fds(fds.begin(), fds.begin() + fuse_count), locks(fds.begin() + fuse_count, fds.end());
    auto deferred = std::make_shared<Napi::Promise::Deferred>(env);
    std::string err;
    if (int e = fs_->AdoptJournal(journal_path_, &err)) {
      Napi::Error error = ErrnoError(env, e, err);
      error.Set("code", Napi::String::New(env, e == EPROTO ? "E_STATE_VERSION" : "E_TAKEOVER"));
      deferred->Reject(error.Value());
      return deferred->Promise();
    }
    transport_ = std::make_unique<Transport>(fs_.get(), topts_);
    if (fs_->passthrough()) fs_->set_backing_registry(transport_.get());
    stopped_tsfn_ = Napi::ThreadSafeFunction::New(env, on_stopped, "ephemera-stopped", 0, 1);
    Session* self = this;
    transport_->set_on_stopped([self]() {
      self->stopped_tsfn_.NonBlockingCall([](Napi::Env env, Napi::Function cb) { cb.Call({}); });
      self->stopped_tsfn_.Release();
    });
    int e = transport_->Adopt(fuse_fds, fs_->kernel_has_resend(), &err);
    if (e != 0) {
      Napi::Error error = ErrnoError(env, e, err);
      deferred->Reject(error.Value());
      return deferred->Promise();
    }
    resend_note_ = err;
    adopted_locks_ = std::move(locks);
    holder_conn_ = conn;
    deferred->Resolve(InfoObject(env));
    return deferred->Promise();
  }

  std::vector<int> fs_store_locks() { return fs_->store_lock_fds(); }

  Napi::Value Unmount(const Napi::CallbackInfo& info) {
    // A clean unmount: the holder lets go first (else it would wait for a successor).
    if (holder_conn_ >= 0) HolderDone(holder_conn_), holder_conn_ = -1;
    if (transport_) transport_->Stop();
    fs_->set_on_close(nullptr);
    if (close_tsfn_active_) close_tsfn_.Release(), close_tsfn_active_ = false;
    return info.Env().Undefined();
  }

  // handOver(timeoutMs): an upgrade's stop for a restartable mount. The requests already read are
  // answered, the loops stop and our device files close; the mount stays, and the holder, seeing
  // our connection to it close, waits for a successor, which has nothing to resend. The store's
  // files stay for it (releaseStore must not follow). Throws E_HANDOVER when it cannot.
  Napi::Value HandOver(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto fail = [&](const std::string& why) {
      Napi::Error err = Napi::Error::New(env, "cannot hand the mount over: " + why);
      err.Set("code", Napi::String::New(env, "E_HANDOVER"));
      return err;
    };
    int timeout_ms = TimeoutArgument(info, 0, "handOver", 10000);
    if (!transport_ || holder_conn_ < 0) throw fail("no holder keeps this mount's connection (not restartable)");
    int e = transport_->HandOver(timeout_ms);
    // The loops' end is not reported (on_stopped is not called after a hand-over): let go of its
    // callback here, or it would keep the process's event loop alive.
    if (e != EOPNOTSUPP) stopped_tsfn_.Release();
    if (e) {
      throw fail(e == EOPNOTSUPP ? "it is served over io_uring, whose rings are not handed over"
                                 : std::string("a serving thread did not stop in time (") + strerror(e) + ")");
    }
    fs_->set_on_close(nullptr);  // the loops are joined: no RELEASE calls it any more
    if (close_tsfn_active_) close_tsfn_.Release(), close_tsfn_active_ = false;
    close(holder_conn_);
    holder_conn_ = -1;
    return env.Undefined();
  }

  // After the loops stopped: frees every file's data and the store's directories now (see
  // Filesystem::ReleaseStore).
  Napi::Value ReleaseStore(const Napi::CallbackInfo& info) {
    if (transport_) transport_->Stop();
    fs_->ReleaseStore();
    return info.Env().Undefined();
  }

  static Tier TierArgument(const Napi::CallbackInfo& info, size_t i, const char* call) {
    Napi::Value v = i < info.Length() ? info[i] : info.Env().Undefined();
    std::string t = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
    if (t == "memory") return Tier::kMemory;
    if (t == "disk") return Tier::kDisk;
    ThrowBadArg(info.Env(), call, "tier", "\"memory\" or \"disk\"", v, !v.IsString());
  }

  Napi::Value SetPlacement(const Napi::CallbackInfo& info) {
    OptionReader o(info.Env(), info.Length() > 0 ? info[0] : info.Env().Undefined(), "setPlacement");
    PlacementRule r;
    r.memory_budget = o.Bytes("memoryBudget", UINT64_MAX);
    // A new file may go to memory while the tier holds less than this (the keeper's room; default: the budget).
    r.new_file_room = o.Bytes("newFileRoom", r.memory_budget);
    r.reserve_per_open_file = o.Bytes("reservePerOpenFile", 0);
    o.RejectUnknown();
    fs_->SetPlacement(r);
    return info.Env().Undefined();
  }

  // setChargeAgent({helper, cgroupDir}): allocating fallocates on the memory tier run in a helper
  // inside that cgroup; an empty cgroupDir returns them to the daemon (no container attached).
  Napi::Value SetChargeAgent(const Napi::CallbackInfo& info) {
    OptionReader o(info.Env(), info.Length() > 0 ? info[0] : info.Env().Undefined(), "setChargeAgent");
    Filesystem::ChargeAgent a;
    a.helper = o.String("helper", "");
    a.cgroup_dir = o.String("cgroupDir", "");
    o.RejectUnknown();
    if (!a.cgroup_dir.empty() && a.helper.empty()) throw Napi::TypeError::New(info.Env(), "setChargeAgent: helper is required with cgroupDir");
    fs_->SetChargeAgent(std::move(a));
    return info.Env().Undefined();
  }

  // beginMove(ino, tier) → {token, srcFd, dstFd, size}; throws with .errno/.code on refusal.
  Napi::Value BeginMove(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t ino = InoArgument(info, 0, "beginMove");
    Tier to = TierArgument(info, 1, "beginMove");
    MoveTicket t;
    if (int e = fs_->BeginMove(ino, to, &t)) {
      Napi::Error err = Napi::Error::New(env, std::string("cannot move inode ") + std::to_string(ino) + ": " + strerror(e));
      err.Set("errno", Napi::Number::New(env, e));
      err.Set("code", Napi::String::New(env, ErrnoCode(e)));
      throw err;
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("token", static_cast<double>(t.token));
    o.Set("srcFd", t.src_fd);
    o.Set("dstFd", t.dst_fd);
    o.Set("size", static_cast<double>(t.size));
    return o;
  }
  Napi::Value CommitMove(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), fs_->CommitMove(InoArgument(info, 0, "commitMove", "token")));
  }
  Napi::Value AbortMove(const Napi::CallbackInfo& info) {
    fs_->AbortMove(InoArgument(info, 0, "abortMove", "token"));
    return info.Env().Undefined();
  }

  class MoveWorker : public Napi::AsyncWorker {
   public:
    MoveWorker(Napi::Env env, Session* s, uint64_t ino, Tier to)
        : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), s_(s), ino_(ino), to_(to) {
      keep_ = Napi::Persistent(s->Value());
    }
    void Execute() override { err_ = s_->fs_->MoveNow(ino_, to_, &bytes_); }
    void OnOK() override {
      Napi::Env env = Env();
      Napi::Object o = Napi::Object::New(env);
      o.Set("errno", err_);
      o.Set("code", err_ == 0 ? std::string("OK") : ErrnoCode(err_));
      o.Set("bytes", static_cast<double>(bytes_));
      deferred_.Resolve(o);
    }
    Napi::Promise Promise() { return deferred_.Promise(); }

   private:
    Napi::Promise::Deferred deferred_;
    Session* s_;
    Napi::ObjectReference keep_;
    uint64_t ino_;
    Tier to_;
    int err_ = 0;
    uint64_t bytes_ = 0;
  };

  // moveNow(ino, tier) → Promise<{errno, code, bytes}>: the copy runs on the libuv pool.
  Napi::Value MoveNow(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t ino = InoArgument(info, 0, "moveNow");
    auto* w = new MoveWorker(env, this, ino, TierArgument(info, 1, "moveNow"));
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }

  // setOnClose(fn(ino, bytes, tier)): last close of a regular file (promotion-on-close, stats).
  Napi::Value SetOnClose(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Value cb = info.Length() > 0 ? info[0] : env.Undefined();
    if (!cb.IsFunction() && !cb.IsNull() && !cb.IsUndefined()) ThrowBadArg(env, "setOnClose", "cb", "a function or null", cb, false);
    if (close_tsfn_active_) fs_->set_on_close(nullptr), close_tsfn_.Release(), close_tsfn_active_ = false;
    if (!cb.IsFunction()) return env.Undefined();  // null: no callback
    close_tsfn_ = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "ephemera-close", 256, 1);
    close_tsfn_.Unref(env);  // close events alone never keep the process alive
    close_tsfn_active_ = true;
    Napi::ThreadSafeFunction tsfn = close_tsfn_;
    fs_->set_on_close([tsfn](uint64_t ino, uint64_t bytes, Tier tier) mutable {
      tsfn.NonBlockingCall([ino, bytes, tier](Napi::Env env, Napi::Function cb) {
        cb.Call({Napi::Number::New(env, static_cast<double>(ino)), Napi::Number::New(env, static_cast<double>(bytes)),
                 Napi::String::New(env, TierName(tier))});
      });
    });
    return env.Undefined();
  }

  class SyncWorker : public Napi::AsyncWorker {
   public:
    SyncWorker(Napi::Env env, Session* s) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), s_(s) {
      keep_ = Napi::Persistent(s->Value());
    }
    void Execute() override { files_ = s_->fs_->SyncDiskTier(); }
    void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), files_)); }
    Napi::Promise Promise() { return deferred_.Promise(); }

   private:
    Napi::Promise::Deferred deferred_;
    Session* s_;
    Napi::ObjectReference keep_;
    int files_ = 0;
  };

  // syncDiskTier() → Promise<number of files written back>, on the libuv pool.
  Napi::Value SyncDiskTier(const Napi::CallbackInfo& info) {
    auto* w = new SyncWorker(info.Env(), this);
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }

  Napi::Value TierBytes(const Napi::CallbackInfo& info) {
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("memory", static_cast<double>(fs_->tier_bytes(Tier::kMemory)));
    o.Set("disk", static_cast<double>(fs_->tier_bytes(Tier::kDisk)));
    return o;
  }

  Napi::Value InfoObject(Napi::Env env) {
    Napi::Object o = Napi::Object::New(env);
    std::string mode = fs_->passthrough() ? "passthrough" : fs_->writeback() ? "writeback" : "direct";
    o.Set("mode", mode);
    o.Set("protoMinor", fs_->proto_minor());
    o.Set("queues", topts_.queues);
    o.Set("mountpoint", topts_.mountpoint);
    o.Set("connection", transport_ ? transport_->connection() : "");
    o.Set("initialized", fs_->initialized());
    o.Set("transport", transport_ ? transport_->active_transport() : "none");
    o.Set("uringQueues", transport_ ? transport_->uring_queues() : 0);
    o.Set("uringNote", transport_ ? transport_->uring_note() : "");
    o.Set("killprivV2", fs_->killpriv_v2());
    if (!journal_path_.empty()) {
      auto js = fs_->journal_stats();
      Napi::Object j = Napi::Object::New(env);
      j.Set("bytes", static_cast<double>(js.bytes));
      j.Set("batches", static_cast<double>(js.batches));
      j.Set("loadedBatches", static_cast<double>(js.loaded_batches));
      j.Set("loadUs", static_cast<double>(js.load_us));
      j.Set("repliesReplayed", static_cast<double>(js.replies_replayed));
      j.Set("resendsApplied", static_cast<double>(js.resends_applied));
      j.Set("orphansRemoved", static_cast<double>(js.orphans_removed));
      j.Set("commitNs", static_cast<double>(js.commit_ns));
      j.Set("compactions", static_cast<double>(js.compactions));
      j.Set("resendsRefused", static_cast<double>(js.resends_refused));
      j.Set("kernelHasResend", fs_->kernel_has_resend());
      j.Set("firstRequestMs", transport_ ? static_cast<double>(transport_->first_request_ms()) : 0.0);
      j.Set("resendNote", resend_note_);
      j.Set("store", fs_->store_name());
      o.Set("restart", j);
    }
    return o;
  }
  Napi::Value Info(const Napi::CallbackInfo& info) { return InfoObject(info.Env()); }

  // dispatch(Buffer) → Buffer (the reply bytes) or null for requests the protocol never answers.
  Napi::Value Dispatch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (transport_) throw Napi::Error::New(env, "dispatch() is for unmounted sessions");
    if (info.Length() < 1 || !info[0].IsBuffer()) throw Napi::TypeError::New(env, "dispatch(Buffer)");
    auto buf = info[0].As<Napi::Buffer<uint8_t>>();
    // Copy to an 8-byte aligned buffer: the kernel's buffers are aligned, Node's slices may not be.
    std::vector<uint64_t> aligned((buf.Length() + 7) / 8);
    memcpy(aligned.data(), buf.Data(), buf.Length());
    BufferSink sink;
    fs_->Dispatch(reinterpret_cast<const uint8_t*>(aligned.data()), buf.Length(), &sink);
    if (!sink.sent) return env.Null();
    return Napi::Buffer<uint8_t>::Copy(env, sink.bytes.data(), sink.bytes.size());
  }

  Napi::Value Counters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object ops = Napi::Object::New(env);
    const OpCounters& c = fs_->counters();
    for (int i = 0; i < kOpCount; ++i) {
      uint64_t n = c.count[i].load(), e = c.errors[i].load();
      if (!n && !e) continue;
      Napi::Object row = Napi::Object::New(env);
      row.Set("count", static_cast<double>(n));
      row.Set("errors", static_cast<double>(e));
      ops.Set(OpName(i), row);
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("ops", ops);
    o.Set("unanswered", static_cast<double>(c.unanswered.load()));
    o.Set("exceptions", static_cast<double>(c.exceptions.load()));
    o.Set("malformed", static_cast<double>(c.malformed.load()));
    o.Set("badReplies", static_cast<double>(c.bad_replies.load()));
    o.Set("unchargedFallocates", static_cast<double>(fs_->uncharged_fallocates()));
    o.Set("backingOpenFailures", static_cast<double>(fs_->backing_open_failures()));
    return o;
  }

  Napi::Value Usage(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto u = fs_->GetUsage();
    Napi::Object o = Napi::Object::New(env);
    o.Set("inodes", static_cast<double>(u.inodes));
    o.Set("files", static_cast<double>(u.files));
    o.Set("openFiles", static_cast<double>(u.open_files));
    o.Set("bytesMemory", static_cast<double>(u.bytes_memory));
    o.Set("bytesDisk", static_cast<double>(u.bytes_disk));
    o.Set("links", static_cast<double>(u.links));
    o.Set("nameBytes", static_cast<double>(u.name_bytes));
    o.Set("sizeQuota", static_cast<double>(u.size_quota));
    o.Set("inodeQuota", static_cast<double>(u.inode_quota));
    o.Set("filesMemory", static_cast<double>(u.files_memory));
    o.Set("filesDisk", static_cast<double>(u.files_disk));
    o.Set("openMemory", static_cast<double>(u.open_memory));
    o.Set("openDisk", static_cast<double>(u.open_disk));
    o.Set("movesRefusedMapped", static_cast<double>(u.moves_refused_mapped));
    o.Set("demotedAtOpen", static_cast<double>(u.demoted_at_open));
    o.Set("admittedUnmovable", static_cast<double>(u.admitted_unmovable));
    o.Set("movesUnverified", static_cast<double>(u.moves_unverified));
    o.Set("fallocateTimeouts", static_cast<double>(u.fallocate_timeouts));
    return o;
  }

  Napi::Value InodeStats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto stats = fs_->InodeStats();
    Napi::Array arr = Napi::Array::New(env, stats.size());
    for (size_t i = 0; i < stats.size(); ++i) {
      const auto& s = stats[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("ino", static_cast<double>(s.ino));
      o.Set("generation", static_cast<double>(s.generation));
      o.Set("tier", TierName(s.tier));
      o.Set("size", static_cast<double>(s.size));
      o.Set("allocated", static_cast<double>(s.allocated));
      o.Set("openCount", s.open_count);
      o.Set("lastOpenMs", static_cast<double>(s.last_open_ms));
      o.Set("lastCloseMs", static_cast<double>(s.last_close_ms));
      o.Set("lastMoveMs", static_cast<double>(s.last_move_ms));
      arr.Set(i, o);
    }
    return arr;
  }

  Napi::Value SetQuotas(const Napi::CallbackInfo& info) {
    uint64_t size = static_cast<uint64_t>(IntegerArgument(info, 0, "setQuotas", "sizeBytes", 0, kMaxSafeInteger));
    uint64_t inodes = static_cast<uint64_t>(IntegerArgument(info, 1, "setQuotas", "inodes", 0, kMaxSafeInteger));
    fs_->SetQuotas(size, inodes);
    return info.Env().Undefined();
  }

  std::unique_ptr<Filesystem> fs_;
  std::unique_ptr<Transport> transport_;
  std::string journal_path_, resend_note_;
  int holder_conn_ = -1;              // open while the holder keeps our connection for a successor
  std::vector<int> adopted_locks_;    // a successor's store locks, received from the holder
  TransportOptions topts_;
  std::string mode_;
  Napi::ThreadSafeFunction ready_tsfn_, stopped_tsfn_, close_tsfn_;
  bool close_tsfn_active_ = false;
};

Napi::Value DetachMountJs(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "detachMount(path)");
  return Napi::Number::New(info.Env(), DetachMount(info[0].As<Napi::String>().Utf8Value()));
}
Napi::Value AbortConnectionJs(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "abortConnection(id)");
  return Napi::Number::New(info.Env(), AbortConnection(info[0].As<Napi::String>().Utf8Value()));
}
// holderTake(socketPath, timeoutMs) → null when no holder listens there, else {fds, blob, conn}.
Napi::Value HolderTakeJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "holderTake(socketPath, timeoutMs)");
  int timeout_ms = TimeoutArgument(info, 1, "holderTake", 5000);
  std::vector<int> fds;
  std::string blob, err;
  int conn = -1;
  int e = HolderTake(info[0].As<Napi::String>().Utf8Value(), timeout_ms, &fds, &blob, &conn, &err);
  if (e == ENOENT || e == ECONNREFUSED) return env.Null();
  if (e) {
    Napi::Error error = Napi::Error::New(env, err);
    error.Set("errno", Napi::Number::New(env, e));
    error.Set("code", Napi::String::New(env, e == EBUSY ? "E_HOLDER_BUSY" : "E_TAKEOVER"));
    throw error;
  }
  Napi::Object o = Napi::Object::New(env);
  Napi::Array arr = Napi::Array::New(env, fds.size());
  for (size_t i = 0; i < fds.size(); ++i) arr.Set(i, fds[i]);
  o.Set("fds", arr);
  o.Set("blob", blob);
  o.Set("conn", conn);
  return o;
}

// errnoName(n) → "EINPROGRESS", or null for a number Linux does not define: the table every
// native error code comes from (errno_names.h), for tests and for callers holding a bare errno.
Napi::Value ErrnoNameJs(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "errnoName(errno)");
  const char* name = ErrnoName(info[0].As<Napi::Number>().Int32Value());
  return name ? Napi::String::New(info.Env(), name) : info.Env().Null();
}

Napi::Value MayPassthroughJs(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), MayPassthrough());
}

}  // namespace

void InitSession(Napi::Env env, Napi::Object exports) {
  exports.Set("Session", Session::Define(env));
  exports.Set("detachMount", Napi::Function::New(env, DetachMountJs));
  exports.Set("abortConnection", Napi::Function::New(env, AbortConnectionJs));
  exports.Set("mayPassthrough", Napi::Function::New(env, MayPassthroughJs));
  exports.Set("holderTake", Napi::Function::New(env, HolderTakeJs));
  exports.Set("errnoName", Napi::Function::New(env, ErrnoNameJs));
  Napi::Object names = Napi::Object::New(env);
  for (int i = 0; i < kOpCount; ++i) names.Set(OpName(i), i);
  exports.Set("opcodeIndex", names);
}

}  // namespace ephemera
