// torch.save() zip-format state dicts: reader (own zip + restricted pickle VM) and writer.
//
// Reference: decoder spec §2.1–§2.2; PKWARE APPNOTE.TXT 6.3.x (local file header §4.3.7,
// central directory §4.3.12, end of central directory §4.3.16, ZIP64 §4.3.14/§4.3.15/§4.5.3);
// CPython Lib/pickletools.py (opcode table, protocol 2); PyTorch torch/serialization.py
// (_save: persistent id ('storage', storage_type, key, location, numel)) and
// torch/_utils.py (_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
// backward_hooks[, metadata])).
//
// The pickle VM knows a handful of opcodes and a fixed allow-list of GLOBALs. It builds
// plain values only; nothing is ever imported or called except the three constructors
// below, implemented here. Every failure is a glmvoice::Error (kBadFile) naming the file,
// the record and the byte position.
#include "io/torch_pickle.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <unordered_map>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/error.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"  // format_shape

namespace glmvoice::io {

namespace {

Error bad(const std::string& file, const std::string& key, const std::string& reason) {
  return Error(ErrorCode::kBadFile, file, key, reason);
}

// ---- CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), slice-by-8 -------

struct CrcTables {
  uint32_t t[8][256];
  CrcTables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (0xEDB88320u ^ (c >> 1)) : (c >> 1);
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i) {
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
    }
  }
};

uint32_t crc32(const uint8_t* p, size_t n) {
  static const CrcTables tables;
  const auto& t = tables.t;
  uint32_t c = 0xffffffffu;
  while (n >= 8) {
    const uint32_t lo = c ^ (uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
    c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
        t[3][p[4]] ^ t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
    p += 8;
    n -= 8;
  }
  while (n--) c = t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t rd32(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
uint64_t rd64(const uint8_t* p) { return uint64_t(rd32(p)) | (uint64_t(rd32(p + 4)) << 32); }

// ---- zip reader -------------------------------------------------------------

struct ZipEntry {
  std::string name;
  uint64_t data_offset = 0;  // absolute offset of the stored bytes
  uint64_t size = 0;
  uint32_t crc = 0;
};

class ZipReader {
 public:
  ZipReader(const uint8_t* data, size_t size, std::string path)
      : data_(data), size_(size), path_(std::move(path)) {
    parse();
  }

  const ZipEntry* find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &entries_[it->second];
  }
  const std::vector<ZipEntry>& entries() const { return entries_; }

  // The stored bytes of `entry`, CRC-32 checked.
  const uint8_t* read(const ZipEntry& entry) const {
    const uint8_t* p = data_ + entry.data_offset;
    const uint32_t crc = crc32(p, entry.size);
    if (crc != entry.crc) {
      char buf[96];
      std::snprintf(buf, sizeof(buf), "CRC-32 mismatch (stored %08x, computed %08x)", entry.crc, crc);
      throw bad(path_, entry.name, buf);
    }
    return p;
  }

 private:
  void parse() {
    if (size_ < 22) throw bad(path_, "", "too short for a zip archive (" + std::to_string(size_) + " bytes)");
    // End of central directory: scan back over a possible comment (at most 65535 bytes).
    int64_t eocd = -1;
    const int64_t lowest = std::max<int64_t>(0, static_cast<int64_t>(size_) - 22 - 65535);
    for (int64_t pos = static_cast<int64_t>(size_) - 22; pos >= lowest; --pos) {
      if (rd32(data_ + pos) == 0x06054b50u) {
        eocd = pos;
        break;
      }
    }
    if (eocd < 0) throw bad(path_, "", "zip end-of-central-directory record not found (truncated file?)");
    const uint8_t* e = data_ + eocd;
    uint64_t count = rd16(e + 10);
    uint64_t cd_size = rd32(e + 12);
    uint64_t cd_offset = rd32(e + 16);
    if (count == 0xffff || cd_size == 0xffffffffu || cd_offset == 0xffffffffu) {
      // ZIP64: locator 20 bytes before the EOCD points at the ZIP64 EOCD record.
      if (eocd < 20 || rd32(data_ + eocd - 20) != 0x07064b50u) {
        throw bad(path_, "", "ZIP64 end-of-central-directory locator missing");
      }
      const uint64_t z64 = rd64(data_ + eocd - 20 + 8);
      if (z64 > size_ - 56 || rd32(data_ + z64) != 0x06064b50u) {
        throw bad(path_, "", "ZIP64 end-of-central-directory record missing");
      }
      count = rd64(data_ + z64 + 32);
      cd_size = rd64(data_ + z64 + 40);
      cd_offset = rd64(data_ + z64 + 48);
    }
    if (cd_offset > size_ || cd_size > size_ - cd_offset) {
      throw bad(path_, "", "zip central directory outside the file");
    }
    uint64_t pos = cd_offset;
    const uint64_t cd_end = cd_offset + cd_size;
    for (uint64_t i = 0; i < count; ++i) {
      if (pos + 46 > cd_end || rd32(data_ + pos) != 0x02014b50u) {
        throw bad(path_, "", "zip central directory entry " + std::to_string(i) + " malformed");
      }
      const uint8_t* c = data_ + pos;
      const uint16_t flags = rd16(c + 8);
      const uint16_t method = rd16(c + 10);
      ZipEntry entry;
      entry.crc = rd32(c + 16);
      uint64_t csize = rd32(c + 20);
      uint64_t usize = rd32(c + 24);
      const uint16_t name_len = rd16(c + 28);
      const uint16_t extra_len = rd16(c + 30);
      const uint16_t comment_len = rd16(c + 32);
      uint64_t local = rd32(c + 42);
      if (pos + 46 + name_len + extra_len + comment_len > cd_end) {
        throw bad(path_, "", "zip central directory entry " + std::to_string(i) + " runs past the directory");
      }
      entry.name.assign(reinterpret_cast<const char*>(c + 46), name_len);
      // ZIP64 extended information (id 0x0001): the fields saturated above, in order.
      const uint8_t* x = c + 46 + name_len;
      for (uint32_t off = 0; off + 4 <= extra_len;) {
        const uint16_t id = rd16(x + off);
        const uint16_t len = rd16(x + off + 2);
        if (off + 4 + len > extra_len) break;
        if (id == 0x0001) {
          uint32_t q = off + 4;
          auto take = [&](uint64_t* field) {
            if (*field != 0xffffffffu) return;
            if (q + 8 > off + 4u + len) throw bad(path_, entry.name, "ZIP64 extra field too short");
            *field = rd64(x + q);
            q += 8;
          };
          take(&usize);
          take(&csize);
          take(&local);
        }
        off += 4 + len;
      }
      if (flags & 0x1) throw Error(ErrorCode::kUnsupported, path_, entry.name, "encrypted zip entry");
      if (method != 0) {
        throw Error(ErrorCode::kUnsupported, path_, entry.name,
                    "zip entry is compressed (method " + std::to_string(method) +
                        "); torch.save writes stored entries only");
      }
      if (csize != usize) throw bad(path_, entry.name, "stored zip entry with compressed size != size");
      if (local > size_ || size_ - local < 30 || rd32(data_ + local) != 0x04034b50u) {
        throw bad(path_, entry.name, "zip local header missing or outside the file");
      }
      const uint64_t data_offset = local + 30 + rd16(data_ + local + 26) + rd16(data_ + local + 28);
      if (data_offset > size_ || usize > size_ - data_offset) {
        throw bad(path_, entry.name, "zip entry data runs past the end of the file (truncated?)");
      }
      entry.data_offset = data_offset;
      entry.size = usize;
      if (!index_.emplace(entry.name, entries_.size()).second) {
        throw bad(path_, entry.name, "duplicate zip entry");
      }
      entries_.push_back(std::move(entry));
      pos += 46 + name_len + extra_len + comment_len;
    }
  }

  const uint8_t* data_;
  size_t size_;
  std::string path_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
};

// ---- pickle VM --------------------------------------------------------------

struct PyObj {
  enum Kind { kNone, kBool, kInt, kFloat, kStr, kTuple, kList, kDict, kGlobal, kTensor, kStorage };
  Kind kind = kNone;
  int64_t i = 0;
  double f = 0;
  std::string s;                                   // str; GLOBAL "module.name"; storage key
  std::vector<PyObj*> items;                       // tuple, list
  std::vector<std::pair<PyObj*, PyObj*>> dict;     // insertion order
  at::Tensor tensor;                               // tensor; storage (1-D, its dtype)
};

const char* kind_name(PyObj::Kind kind) {
  static const char* kNames[] = {"None", "bool", "int", "float", "str", "tuple",
                                 "list", "dict", "global", "tensor", "storage"};
  return kNames[kind];
}

struct StorageType {
  const char* name;
  at::ScalarType dtype;
};
const StorageType kStorageTypes[] = {
    {"torch.FloatStorage", at::kFloat},   {"torch.HalfStorage", at::kHalf},
    {"torch.BFloat16Storage", at::kBFloat16}, {"torch.DoubleStorage", at::kDouble},
    {"torch.LongStorage", at::kLong},     {"torch.IntStorage", at::kInt},
    {"torch.ShortStorage", at::kShort},   {"torch.CharStorage", at::kChar},
    {"torch.ByteStorage", at::kByte},     {"torch.BoolStorage", at::kBool},
};

bool storage_dtype(const std::string& global, at::ScalarType* out) {
  for (const auto& row : kStorageTypes) {
    if (global == row.name) {
      *out = row.dtype;
      return true;
    }
  }
  return false;
}

const char* storage_name(at::ScalarType dtype) {
  for (const auto& row : kStorageTypes) {
    if (row.dtype == dtype) return row.name + 6;  // without "torch."
  }
  return nullptr;
}

bool allowed_global(const std::string& name) {
  at::ScalarType dummy;
  return name == "collections.OrderedDict" || name == "torch._utils._rebuild_tensor_v2" ||
         name == "torch._utils._rebuild_parameter" || storage_dtype(name, &dummy);
}

class PickleVm {
 public:
  PickleVm(const uint8_t* data, size_t size, std::string file, std::string record, StorageLoader loader)
      : p_(data), n_(size), file_(std::move(file)), record_(std::move(record)), loader_(std::move(loader)) {}

  PyObj* run() {
    while (true) {
      if (pos_ >= n_) fail("pickle ends without STOP");
      op_pos_ = pos_;
      const uint8_t op = p_[pos_++];
      switch (op) {
        case 0x80: take(1); break;                              // PROTO
        case 0x95: take(8); break;                              // FRAME
        case '.': {                                             // STOP
          PyObj* top = pop();
          return top;
        }
        case '(': marks_.push_back(stack_.size()); break;       // MARK
        case '0': pop(); break;                                 // POP
        case 'N': push(make(PyObj::kNone)); break;              // NONE
        case 0x88: case 0x89: {                                 // NEWTRUE / NEWFALSE
          PyObj* o = make(PyObj::kBool);
          o->i = op == 0x88;
          push(o);
          break;
        }
        case 'K': push_int(*take(1)); break;                    // BININT1
        case 'M': push_int(rd16(take(2))); break;               // BININT2
        case 'J': push_int(static_cast<int32_t>(rd32(take(4)))); break;  // BININT
        case 0x8a: {                                            // LONG1
          const uint8_t len = *take(1);
          if (len > 8) fail("LONG1 integer of " + std::to_string(len) + " bytes is too large");
          const uint8_t* b = take(len);
          uint64_t v = 0;
          for (int k = len - 1; k >= 0; --k) v = (v << 8) | b[k];
          if (len > 0 && len < 8 && (b[len - 1] & 0x80)) v |= ~uint64_t(0) << (8 * len);  // sign
          push_int(static_cast<int64_t>(v));
          break;
        }
        case 'G': {                                             // BINFLOAT (big-endian)
          const uint8_t* b = take(8);
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = (bits << 8) | b[k];
          PyObj* o = make(PyObj::kFloat);
          std::memcpy(&o->f, &bits, 8);
          push(o);
          break;
        }
        case 'X': push_str(rd32(take(4))); break;               // BINUNICODE
        case 0x8c: push_str(*take(1)); break;                   // SHORT_BINUNICODE
        case 0x8d: push_str(rd64(take(8))); break;              // BINUNICODE8
        case ')': push(make(PyObj::kTuple)); break;             // EMPTY_TUPLE
        case 't': {                                             // TUPLE
          PyObj* o = make(PyObj::kTuple);
          o->items = pop_mark();
          push(o);
          break;
        }
        case 0x85: case 0x86: case 0x87: {                      // TUPLE1..3
          const size_t k = op - 0x84;
          PyObj* o = make(PyObj::kTuple);
          need_stack(k);
          o->items.assign(stack_.end() - k, stack_.end());
          stack_.resize(stack_.size() - k);
          push(o);
          break;
        }
        case ']': push(make(PyObj::kList)); break;              // EMPTY_LIST
        case 'a': {                                             // APPEND
          PyObj* v = pop();
          expect(top(), PyObj::kList, "APPEND")->items.push_back(v);
          break;
        }
        case 'e': {                                             // APPENDS
          auto items = pop_mark();
          PyObj* list = expect(top(), PyObj::kList, "APPENDS");
          list->items.insert(list->items.end(), items.begin(), items.end());
          break;
        }
        case '}': push(make(PyObj::kDict)); break;              // EMPTY_DICT
        case 's': {                                             // SETITEM
          PyObj* v = pop();
          PyObj* k = pop();
          expect(top(), PyObj::kDict, "SETITEM")->dict.emplace_back(k, v);
          break;
        }
        case 'u': {                                             // SETITEMS
          auto items = pop_mark();
          if (items.size() % 2) fail("SETITEMS with an odd number of items");
          PyObj* d = expect(top(), PyObj::kDict, "SETITEMS");
          for (size_t k = 0; k < items.size(); k += 2) d->dict.emplace_back(items[k], items[k + 1]);
          break;
        }
        case 'q': memo_[*take(1)] = top(); break;               // BINPUT
        case 'r': memo_[rd32(take(4))] = top(); break;          // LONG_BINPUT
        case 0x94: memo_[static_cast<uint32_t>(memo_.size())] = top(); break;  // MEMOIZE
        case 'h': push(memo_get(*take(1))); break;              // BINGET
        case 'j': push(memo_get(rd32(take(4)))); break;         // LONG_BINGET
        case 'c': {                                             // GLOBAL
          const std::string module = line();
          const std::string name = line();
          push(make_global(module + "." + name));
          break;
        }
        case 0x93: {                                            // STACK_GLOBAL
          PyObj* name = expect(pop(), PyObj::kStr, "STACK_GLOBAL");
          PyObj* module = expect(pop(), PyObj::kStr, "STACK_GLOBAL");
          push(make_global(module->s + "." + name->s));
          break;
        }
        case 'Q': push(persistent_load(pop())); break;          // BINPERSID
        case 'R': {                                             // REDUCE
          PyObj* args = expect(pop(), PyObj::kTuple, "REDUCE arguments");
          PyObj* callable = expect(pop(), PyObj::kGlobal, "REDUCE callable");
          push(reduce(callable->s, args->items));
          break;
        }
        case 'b': {                                             // BUILD
          PyObj* state = pop();
          PyObj* obj = top();
          // OrderedDict state = {'_metadata': ...} (module versions): ignored.
          if (obj->kind != PyObj::kDict) fail(std::string("BUILD on a ") + kind_name(obj->kind));
          if (state->kind != PyObj::kDict && state->kind != PyObj::kNone && state->kind != PyObj::kTuple) {
            fail(std::string("BUILD with a ") + kind_name(state->kind) + " state");
          }
          break;
        }
        default: {
          char buf[96];
          if (op >= 0x20 && op < 0x7f) {
            std::snprintf(buf, sizeof(buf), "unsupported pickle opcode 0x%02x '%c'", op, op);
          } else {
            std::snprintf(buf, sizeof(buf), "unsupported pickle opcode 0x%02x", op);
          }
          fail(buf);
        }
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& reason) const {
    throw bad(file_, record_, reason + " (at byte " + std::to_string(op_pos_) + ")");
  }

  const uint8_t* take(uint64_t k) {
    if (k > n_ - pos_) fail("pickle truncated");
    const uint8_t* b = p_ + pos_;
    pos_ += k;
    return b;
  }

  std::string line() {
    const uint8_t* start = p_ + pos_;
    const void* nl = std::memchr(start, '\n', n_ - pos_);
    if (!nl) fail("pickle truncated in GLOBAL");
    const size_t len = static_cast<const uint8_t*>(nl) - start;
    pos_ += len + 1;
    return std::string(reinterpret_cast<const char*>(start), len);
  }

  PyObj* make(PyObj::Kind kind) {
    arena_.emplace_back();
    arena_.back().kind = kind;
    return &arena_.back();
  }

  void push(PyObj* o) { stack_.push_back(o); }
  void push_int(int64_t v) {
    PyObj* o = make(PyObj::kInt);
    o->i = v;
    push(o);
  }
  void push_str(uint64_t len) {
    const uint8_t* b = take(len);
    PyObj* o = make(PyObj::kStr);
    o->s.assign(reinterpret_cast<const char*>(b), len);
    push(o);
  }

  void need_stack(size_t k) {
    const size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() < floor + k) fail("pickle stack underflow");
  }
  PyObj* pop() {
    need_stack(1);
    PyObj* o = stack_.back();
    stack_.pop_back();
    return o;
  }
  PyObj* top() {
    need_stack(1);
    return stack_.back();
  }
  std::vector<PyObj*> pop_mark() {
    if (marks_.empty()) fail("pickle MARK missing");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PyObj*> items(stack_.begin() + m, stack_.end());
    stack_.resize(m);
    return items;
  }
  PyObj* memo_get(uint32_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) fail("pickle memo entry " + std::to_string(index) + " missing");
    return it->second;
  }
  PyObj* expect(PyObj* o, PyObj::Kind kind, const char* what) {
    if (o->kind != kind) {
      fail(std::string(what) + ": expected a " + kind_name(kind) + ", got a " + kind_name(o->kind));
    }
    return o;
  }

  PyObj* make_global(const std::string& name) {
    if (!allowed_global(name)) {
      fail("pickle GLOBAL '" + name + "' is not allowed (a state dict only uses collections.OrderedDict, "
           "torch._utils._rebuild_tensor_v2 and torch.*Storage)");
    }
    PyObj* o = make(PyObj::kGlobal);
    o->s = name;
    return o;
  }

  // ('storage', torch.XStorage, key, location, numel)
  PyObj* persistent_load(PyObj* pid) {
    expect(pid, PyObj::kTuple, "persistent id");
    const auto& t = pid->items;
    if (t.size() != 5 || t[0]->kind != PyObj::kStr || t[0]->s != "storage" || t[1]->kind != PyObj::kGlobal ||
        t[2]->kind != PyObj::kStr || t[3]->kind != PyObj::kStr || t[4]->kind != PyObj::kInt) {
      fail("persistent id is not ('storage', type, key, location, numel)");
    }
    at::ScalarType dtype;
    if (!storage_dtype(t[1]->s, &dtype)) fail("persistent id storage type '" + t[1]->s + "' unknown");
    const std::string& key = t[2]->s;
    const int64_t numel = t[4]->i;
    if (numel < 0) fail("storage '" + key + "' has negative size");
    auto it = storages_.find(key);
    if (it != storages_.end()) {
      if (it->second->tensor.scalar_type() != dtype || it->second->tensor.numel() != numel) {
        fail("storage '" + key + "' used with different types or sizes");
      }
      return it->second;
    }
    if (!loader_) fail("storage '" + key + "' referenced but no data records");
    PyObj* o = make(PyObj::kStorage);
    o->s = key;
    o->tensor = loader_(key, dtype, numel);
    storages_[key] = o;
    return o;
  }

  std::vector<int64_t> int_tuple(PyObj* o, const char* what) {
    if (o->kind != PyObj::kTuple && o->kind != PyObj::kList) fail(std::string(what) + " is not a tuple");
    std::vector<int64_t> out;
    for (PyObj* v : o->items) {
      if (v->kind != PyObj::kInt || v->i < 0) fail(std::string(what) + " holds a non-integer or negative value");
      out.push_back(v->i);
    }
    return out;
  }

  PyObj* reduce(const std::string& callable, const std::vector<PyObj*>& args) {
    if (callable == "collections.OrderedDict") {
      if (!args.empty()) fail("OrderedDict() with arguments");
      return make(PyObj::kDict);
    }
    if (callable == "torch._utils._rebuild_parameter") {
      if (args.size() != 3 || args[0]->kind != PyObj::kTensor) fail("_rebuild_parameter arguments malformed");
      return args[0];
    }
    if (callable == "torch._utils._rebuild_tensor_v2") {
      if (args.size() < 4 || args.size() > 7 || args[0]->kind != PyObj::kStorage || args[1]->kind != PyObj::kInt) {
        fail("_rebuild_tensor_v2 arguments malformed");
      }
      const at::Tensor& storage = args[0]->tensor;
      const int64_t offset = args[1]->i;
      const std::vector<int64_t> sizes = int_tuple(args[2], "tensor size");
      const std::vector<int64_t> strides = int_tuple(args[3], "tensor stride");
      if (sizes.size() != strides.size()) fail("tensor size and stride differ in length");
      // Bounds: the last element addressed must lie inside the storage.
      const int64_t limit = storage.numel();
      bool empty = false;
      for (int64_t size : sizes) empty = empty || size == 0;
      __int128 last = offset;  // each term < 2^126; stop summing once past the storage
      for (size_t d = 0; d < sizes.size() && last < limit; ++d) {
        last += static_cast<__int128>(sizes[d] > 0 ? sizes[d] - 1 : 0) * strides[d];
      }
      __int128 numel = 1;
      for (int64_t s : sizes) {
        numel *= s;
        if (numel > (__int128(1) << 62)) fail("tensor size " + format_shape(sizes) + " overflows");
      }
      if (offset < 0 || (!empty && last >= limit) || (empty && offset > limit)) {
        fail("tensor view " + format_shape(sizes) + " at offset " + std::to_string(offset) +
             " runs past its storage '" + args[0]->s + "' of " + std::to_string(limit) + " elements");
      }
      PyObj* o = make(PyObj::kTensor);
      try {
        o->tensor = storage.as_strided(sizes, strides, offset).clone(at::MemoryFormat::Contiguous);
      } catch (const c10::Error& e) {
        fail(std::string("cannot build tensor view: ") + e.what_without_backtrace());
      }
      return o;
    }
    fail("'" + callable + "' cannot be called");
  }

  const uint8_t* p_;
  uint64_t n_;
  uint64_t pos_ = 0;
  uint64_t op_pos_ = 0;
  std::string file_;
  std::string record_;
  StorageLoader loader_;
  std::deque<PyObj> arena_;
  std::vector<PyObj*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, PyObj*> memo_;
  std::map<std::string, PyObj*> storages_;
};

}  // namespace

// ---- StateDict ----------------------------------------------------------------

bool StateDict::has(const std::string& name) const {
  for (const auto& kv : entries) {
    if (kv.first == name) return true;
  }
  return false;
}

const at::Tensor& StateDict::get(const std::string& name) const {
  for (const auto& kv : entries) {
    if (kv.first == name) return kv.second;
  }
  throw Error(ErrorCode::kMismatch, path, name, "tensor not in state dict");
}

const at::Tensor& StateDict::get_checked(const std::string& name, const std::vector<int64_t>& shape) const {
  const at::Tensor& t = get(name);
  if (t.sizes().vec() != shape) {
    throw Error(ErrorCode::kMismatch, path, name,
                "shape " + format_shape(t.sizes()) + " != expected " + format_shape(shape));
  }
  return t;
}

std::vector<std::string> StateDict::names() const {
  std::vector<std::string> out;
  out.reserve(entries.size());
  for (const auto& kv : entries) out.push_back(kv.first);
  return out;
}

// ---- reader entry points ------------------------------------------------------

StateDict parse_state_dict_pickle(const uint8_t* pkl, size_t size, const std::string& path,
                                  const std::string& record, const StorageLoader& loader) {
  c10::InferenceMode guard;
  PickleVm vm(pkl, size, path, record, loader);
  PyObj* root = vm.run();
  if (root->kind != PyObj::kDict) {
    throw bad(path, record, std::string("pickle root is a ") + kind_name(root->kind) + ", not a state dict");
  }
  StateDict dict;
  dict.path = path;
  std::unordered_map<std::string, size_t> seen;
  for (const auto& [k, v] : root->dict) {
    if (k->kind != PyObj::kStr) throw bad(path, record, std::string("state dict key is a ") + kind_name(k->kind));
    if (v->kind != PyObj::kTensor) {
      throw bad(path, k->s, std::string("state dict value is a ") + kind_name(v->kind) + ", not a tensor");
    }
    auto it = seen.find(k->s);
    if (it != seen.end()) {
      dict.entries[it->second].second = v->tensor;  // Python dict semantics: last write wins
    } else {
      seen.emplace(k->s, dict.entries.size());
      dict.entries.emplace_back(k->s, v->tensor);
    }
  }
  return dict;
}

StateDict parse_torch_state_dict(const uint8_t* data, size_t size, const std::string& path) {
  c10::InferenceMode guard;
  if (size >= 2 && data[0] == 0x80 && data[1] <= 5) {
    throw Error(ErrorCode::kUnsupported, path, "",
                "legacy (non-zip) torch.save format; re-save with torch >= 1.6 "
                "(_use_new_zipfile_serialization=True)");
  }
  if (size < 4 || rd32(data) != 0x04034b50u) {
    throw bad(path, "", "not a torch.save zip archive (no 'PK\\x03\\x04' signature)");
  }
  ZipReader zip(data, size, path);
  // The archive folder: the one top-level folder holding data.pkl (any name).
  const ZipEntry* pkl = nullptr;
  for (const auto& entry : zip.entries()) {
    const size_t slash = entry.name.find('/');
    if (slash != std::string::npos && slash > 0 && entry.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      pkl = &entry;
      break;
    }
  }
  if (!pkl) throw bad(path, "data.pkl", "zip has no <folder>/data.pkl record");
  const std::string prefix = pkl->name.substr(0, pkl->name.size() - std::strlen("data.pkl"));
  const uint8_t* pkl_bytes = zip.read(*pkl);
  // torch.save records the writer's byte order (torch >= 1.10); storages are read as little
  // endian, so a big-endian file would load as garbage: refuse it.
  if (const ZipEntry* order = zip.find(prefix + "byteorder")) {
    const uint8_t* b = zip.read(*order);
    const std::string value(reinterpret_cast<const char*>(b), order->size);
    if (value != "little") {
      throw Error(ErrorCode::kUnsupported, path, order->name,
                  "byte order '" + value + "' (only little-endian files are read)");
    }
  }

  StorageLoader loader = [&zip, &prefix, &path](const std::string& key, at::ScalarType dtype,
                                                int64_t numel) -> at::Tensor {
    const std::string name = prefix + "data/" + key;
    const ZipEntry* entry = zip.find(name);
    if (!entry) throw bad(path, name, "storage record missing from the zip");
    const uint64_t elem = c10::elementSize(dtype);
    if (static_cast<uint64_t>(numel) > entry->size / elem || entry->size != numel * elem) {
      throw bad(path, name, "storage record holds " + std::to_string(entry->size) + " bytes, expected " +
                                std::to_string(numel) + " x " + std::to_string(elem));
    }
    const uint8_t* bytes = zip.read(*entry);
    at::Tensor t = at::empty({numel}, at::TensorOptions().dtype(dtype));
    if (entry->size) std::memcpy(t.data_ptr(), bytes, entry->size);
    return t;
  };
  return parse_state_dict_pickle(pkl_bytes, pkl->size, path, pkl->name, loader);
}

StateDict load_torch_state_dict(const std::string& path) {
  c10::InferenceMode guard;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw Error(ErrorCode::kNotFound, path, "", "no such file");
  MappedFile map(path);
  return parse_torch_state_dict(map.data(), map.size(), path);
}

// ---- writer -------------------------------------------------------------------

namespace {

class PickleWriter {
 public:
  void op(uint8_t code) { out_.push_back(static_cast<char>(code)); }
  void global(const std::string& module, const std::string& name) {
    op('c');
    out_ += module + "\n" + name + "\n";
  }
  void str(const std::string& s) {
    op('X');
    u32(static_cast<uint32_t>(s.size()));
    out_ += s;
  }
  void integer(int64_t v) {
    if (v >= 0 && v < 256) {
      op('K');
      out_.push_back(static_cast<char>(v));
    } else if (v >= 0 && v < 65536) {
      op('M');
      out_.push_back(static_cast<char>(v & 0xff));
      out_.push_back(static_cast<char>(v >> 8));
    } else if (v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max()) {
      op('J');
      u32(static_cast<uint32_t>(static_cast<int32_t>(v)));
    } else {
      op(0x8a);
      out_.push_back(8);
      for (int k = 0; k < 8; ++k) out_.push_back(static_cast<char>(static_cast<uint64_t>(v) >> (8 * k)));
    }
  }
  void int_tuple(at::IntArrayRef values) {
    if (values.empty()) {
      op(')');
      return;
    }
    op('(');
    for (int64_t v : values) integer(v);
    op('t');
  }
  std::string take() { return std::move(out_); }

 private:
  void u32(uint32_t v) {
    for (int k = 0; k < 4; ++k) out_.push_back(static_cast<char>(v >> (8 * k)));
  }
  std::string out_;
};

class ZipWriter {
 public:
  explicit ZipWriter(const std::string& path) : path_(path) {
    f_ = std::fopen(path.c_str(), "wb");
    if (!f_) throw Error(ErrorCode::kNotFound, path, "", std::string("cannot create: ") + std::strerror(errno));
  }
  ~ZipWriter() {
    if (f_) std::fclose(f_);
  }

  // A stored entry whose data starts on a 64-byte boundary (padding in the local extra field).
  void add(const std::string& name, const void* data, uint64_t size) {
    if (size >= 0xffffffffu || offset_ >= 0xffffffffu) {
      throw Error(ErrorCode::kUnsupported, path_, name, "ZIP64 archives are not written");
    }
    const uint32_t crc = crc32(static_cast<const uint8_t*>(data), size);
    const uint64_t header_end = offset_ + 30 + name.size() + 4;
    const uint16_t pad = static_cast<uint16_t>((64 - header_end % 64) % 64);
    std::string h;
    put32(h, 0x04034b50u);
    put16(h, 20);      // version needed
    put16(h, 0);       // flags
    put16(h, 0);       // stored
    put16(h, 0);       // time
    put16(h, 0x21);    // date 1980-01-01
    put32(h, crc);
    put32(h, static_cast<uint32_t>(size));
    put32(h, static_cast<uint32_t>(size));
    put16(h, static_cast<uint16_t>(name.size()));
    put16(h, static_cast<uint16_t>(4 + pad));
    h += name;
    put16(h, 0x4246);  // "FB" padding field, as PyTorch's writer uses
    put16(h, pad);
    h.append(pad, 'Z');
    write(h.data(), h.size());
    write(data, size);
    Central c{name, crc, size, offset_};
    central_.push_back(c);
    offset_ += h.size() + size;
  }

  void finish() {
    const uint64_t cd_offset = offset_;
    std::string cd;
    for (const auto& c : central_) {
      put32(cd, 0x02014b50u);
      put16(cd, 20);
      put16(cd, 20);
      put16(cd, 0);
      put16(cd, 0);
      put16(cd, 0);
      put16(cd, 0x21);
      put32(cd, c.crc);
      put32(cd, static_cast<uint32_t>(c.size));
      put32(cd, static_cast<uint32_t>(c.size));
      put16(cd, static_cast<uint16_t>(c.name.size()));
      put16(cd, 0);
      put16(cd, 0);
      put16(cd, 0);
      put16(cd, 0);
      put32(cd, 0);
      put32(cd, static_cast<uint32_t>(c.offset));
      cd += c.name;
    }
    if (central_.size() >= 0xffff || cd_offset + cd.size() >= 0xffffffffu) {
      throw Error(ErrorCode::kUnsupported, path_, "", "ZIP64 archives are not written");
    }
    std::string e;
    put32(e, 0x06054b50u);
    put16(e, 0);
    put16(e, 0);
    put16(e, static_cast<uint16_t>(central_.size()));
    put16(e, static_cast<uint16_t>(central_.size()));
    put32(e, static_cast<uint32_t>(cd.size()));
    put32(e, static_cast<uint32_t>(cd_offset));
    put16(e, 0);
    write(cd.data(), cd.size());
    write(e.data(), e.size());
    const bool ok = std::fclose(f_) == 0;
    f_ = nullptr;
    if (!ok) throw Error(ErrorCode::kBadFile, path_, "", "write failed");
  }

 private:
  struct Central {
    std::string name;
    uint32_t crc;
    uint64_t size;
    uint64_t offset;
  };
  static void put16(std::string& s, uint16_t v) {
    s.push_back(static_cast<char>(v & 0xff));
    s.push_back(static_cast<char>(v >> 8));
  }
  static void put32(std::string& s, uint32_t v) {
    for (int k = 0; k < 4; ++k) s.push_back(static_cast<char>(v >> (8 * k)));
  }
  void write(const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, f_) != n) throw Error(ErrorCode::kBadFile, path_, "", "write failed");
  }

  std::string path_;
  std::FILE* f_ = nullptr;
  uint64_t offset_ = 0;
  std::vector<Central> central_;
};

}  // namespace

void save_torch_state_dict(const std::string& path,
                           const std::vector<std::pair<std::string, at::Tensor>>& entries,
                           const std::string& archive_name) {
  c10::InferenceMode guard;
  if (archive_name.empty() || archive_name.find('/') != std::string::npos) {
    throw Error(ErrorCode::kBadInput, path, "", "invalid archive folder name '" + archive_name + "'");
  }
  std::vector<at::Tensor> storages;
  PickleWriter w;
  w.op(0x80);
  w.op(2);  // PROTO 2
  w.global("collections", "OrderedDict");
  w.op(')');
  w.op('R');
  w.op('(');
  for (const auto& [name, tensor] : entries) {
    const char* storage = storage_name(tensor.scalar_type());
    if (!storage) {
      throw Error(ErrorCode::kUnsupported, path, name,
                  std::string("cannot save dtype ") + c10::toString(tensor.scalar_type()));
    }
    at::Tensor t = tensor.to(c10::Device(c10::kCPU)).contiguous();
    const std::string key = std::to_string(storages.size());
    storages.push_back(t);
    w.str(name);
    w.global("torch._utils", "_rebuild_tensor_v2");
    w.op('(');
    w.op('(');  // persistent id
    w.str("storage");
    w.global("torch", storage);
    w.str(key);
    w.str("cpu");
    w.integer(t.numel());
    w.op('t');
    w.op('Q');
    w.integer(0);  // storage offset
    w.int_tuple(t.sizes());
    w.int_tuple(t.strides());
    w.op(0x89);  // requires_grad False
    w.global("collections", "OrderedDict");
    w.op(')');
    w.op('R');  // backward_hooks
    w.op('t');
    w.op('R');
  }
  w.op('u');  // SETITEMS
  w.op('}');  // state {'_metadata': OrderedDict()}
  w.str("_metadata");
  w.global("collections", "OrderedDict");
  w.op(')');
  w.op('R');
  w.op('s');
  w.op('b');  // BUILD
  w.op('.');
  const std::string pkl = w.take();

  ZipWriter zip(path);
  const std::string prefix = archive_name + "/";
  // Records in the order torch >= 2.5 writes them (torch/serialization.py _save).
  zip.add(prefix + "data.pkl", pkl.data(), pkl.size());
  zip.add(prefix + ".format_version", "1", 1);
  zip.add(prefix + ".storage_alignment", "64", 2);
  zip.add(prefix + "byteorder", "little", 6);
  for (size_t k = 0; k < storages.size(); ++k) {
    const at::Tensor& t = storages[k];
    zip.add(prefix + "data/" + std::to_string(k), t.data_ptr(), t.numel() * t.element_size());
  }
  zip.add(prefix + "version", "3\n", 2);
  // torch writes a per-process id here; a fixed one keeps our files reproducible.
  zip.add(prefix + ".data/serialization_id", "0000000000000000000000000000000000000000", 40);
  zip.finish();
}

// ---- weight norm ----------------------------------------------------------------

int fold_weight_norm(StateDict& dict) {
  c10::InferenceMode guard;
  struct Pair {
    std::string param;  // P (the folded name is P + ".weight")
    std::string g, v;
  };
  static const std::pair<const char*, const char*> kSpellings[] = {
      {".weight_g", ".weight_v"},
      {".parametrizations.weight.original0", ".parametrizations.weight.original1"},
  };
  auto ends_with = [](const std::string& s, const std::string& suffix) {
    return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  std::map<std::string, size_t> position;
  for (size_t k = 0; k < dict.entries.size(); ++k) position[dict.entries[k].first] = k;

  std::vector<Pair> pairs;
  for (const auto& [name, tensor] : dict.entries) {
    for (const auto& [gs, vs] : kSpellings) {
      if (ends_with(name, gs)) {
        const std::string param = name.substr(0, name.size() - std::strlen(gs));
        if (!position.count(param + vs)) {
          throw Error(ErrorCode::kMismatch, dict.path, name, std::string("weight norm: '") + param + vs + "' missing");
        }
        pairs.push_back({param, name, param + vs});
      } else if (ends_with(name, vs)) {
        const std::string param = name.substr(0, name.size() - std::strlen(vs));
        if (!position.count(param + gs)) {
          throw Error(ErrorCode::kMismatch, dict.path, name, std::string("weight norm: '") + param + gs + "' missing");
        }
      }
    }
  }
  if (pairs.empty()) return 0;

  std::map<size_t, std::pair<std::string, at::Tensor>> replace;  // position -> folded entry
  std::set<size_t> drop;
  for (const auto& pair : pairs) {
    const std::string folded = pair.param + ".weight";
    if (position.count(folded)) {
      throw Error(ErrorCode::kMismatch, dict.path, folded, "both a folded weight and a weight-norm pair");
    }
    const size_t gi = position.at(pair.g);
    const size_t vi = position.at(pair.v);
    const at::Tensor& g = dict.entries[gi].second;
    const at::Tensor& v = dict.entries[vi].second;
    if (v.dim() < 1 || g.numel() != v.size(0)) {
      throw Error(ErrorCode::kMismatch, dict.path, pair.g,
                  "weight norm: g " + format_shape(g.sizes()) + " does not match v " + format_shape(v.sizes()));
    }
    // Upstream recomputes this at every forward with the fused kernel; same call, fp32, CPU.
    at::Tensor v32 = v.to(c10::Device(c10::kCPU), at::kFloat).contiguous();
    std::vector<int64_t> g_shape(v.dim(), 1);
    g_shape[0] = v.size(0);
    at::Tensor g32 = g.to(c10::Device(c10::kCPU), at::kFloat).reshape(g_shape).contiguous();
    at::Tensor w = at::_weight_norm(v32, g32, 0).to(v.scalar_type()).contiguous();
    replace[std::min(gi, vi)] = {folded, w};
    drop.insert(std::max(gi, vi));
  }
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.reserve(dict.entries.size() - drop.size());
  for (size_t k = 0; k < dict.entries.size(); ++k) {
    if (drop.count(k)) continue;
    auto it = replace.find(k);
    out.push_back(it != replace.end() ? it->second : dict.entries[k]);
  }
  dict.entries = std::move(out);
  return static_cast<int>(pairs.size());
}

}  // namespace glmvoice::io
