import SwpatchBase
import SwpatchRegistry

/// Why the patcher refused or abandoned an operation. The target is unchanged whenever
/// one of these is thrown.
public enum PatchError: Error, CustomStringConvertible, Sendable {
  case libraryMissing(path: String)
  /// The library path names something other than a readable regular file
  /// (`reason`: "is a directory", "is a FIFO", "is a device", ...).
  case libraryUnusable(path: String, reason: String)
  case tooShort(function: String, size: UInt64, needed: UInt64)
  case noMemoryNearby(address: UInt64)
  case mmapFailed
  case noLoader(function: String)
  case dlopenFailed(path: String, reason: String)
  case drift(oldAddr: UInt64, detail: String)
  case notPatched(pid: Int32)
  case threadInRewrittenBytes(tid: Int32, address: UInt64)
  /// A `build_ids` pin that the target does not match; `actual` nil: not loaded.
  case buildIDMismatch(object: String, expected: String, actual: String?)
  /// `old` names an STT_GNU_IFUNC symbol: its resolver, not the implementation.
  case ifunc(name: String, object: String, example: String?)
  /// The daemon's library store could not keep a copy of the library.
  case libraryStore(reason: String)
  /// The DWARF prototypes of `old` and `new` differ (and `force` was not given).
  case signatureMismatch(old: String, new: String)
  /// A direct branch at `from` lands at `to`, inside the bytes the entry jump rewrites.
  case branchIntoEntry(function: String, from: UInt64, to: UInt64, entry: UInt64)
  /// `--consistency stack`: a thread stayed inside a version being switched away from
  /// for the whole `--retry-for`.
  case stackCheckTimedOut(blocker: String, retriedFor: Double, retries: Int)
  /// A per-thread transition whose last unswitched thread did not return in time; the
  /// operation was undone.
  case transitionTimedOut(blocker: String, waited: Double)
  /// A version to check has no symbol size, so its code cannot be told from the rest.
  case unknownFunctionSize(function: String, address: UInt64)
  /// The bytes a hook would overwrite are not the object file's: another tool (a
  /// debugger, Frida) wrote there, and swpatch would otherwise record its bytes as the
  /// function's original ones.
  case entryModified(function: String, address: UInt64, found: [UInt8], file: [UInt8], inherited: Bool)
  /// A trampoline page the registry records no longer carries swpatch's header: the
  /// memory there is not ours (the process ran `execve`, or unmapped it).
  case pageNotOurs(address: UInt64)
  /// A `prev` at the bottom of a stack needs the original callable, and the instructions
  /// the entry jump overwrites could not be relocated.
  case originalNotCallable(function: String, address: UInt64)
  /// `prev` names something in the library that is not an 8-byte variable.
  case badPrev(name: String, library: String, reason: String)
  /// The library runs code when it is loaded, and `--allow-constructors` was not given.
  case libraryHasConstructors(path: String, functions: [String])
  /// An undefined symbol of the library that neither the target's loader nor swpatch
  /// can bind (`reason` says why).
  case unresolvedExtern(name: String, library: String, reason: String)
  /// An undefined symbol of the library defined more than once in the target.
  case ambiguousExtern(name: String, library: String, candidates: String)
  /// `externs` pins a name the library does not reference.
  case externNotReferenced(name: String, library: String)
  /// `--all-of` names something that is not an ELF executable or library.
  case notELF(path: String, reason: String)

  public var description: String {
    switch self {
    case .libraryMissing(let path):
      return
        "library \(path) does not exist; fix `library` in the patch file (relative paths start at the patch file's folder)"
    case .libraryUnusable(let path, let reason):
      return "library \(path) \(reason); `library` in the patch file must name a shared object file"
    case .tooShort(let function, let size, let needed):
      return "function '\(function)' is \(size) bytes long; a jump needs \(needed) (patch a caller instead)"
    case .noMemoryNearby(let address):
      return
        "no free memory within ±2 GiB of \(hexAddress(address)) for a trampoline, and the function is too short for a 14-byte absolute jump"
    case .mmapFailed:
      return "mmap in the target failed; the target may be out of memory or address space"
    case .noLoader(let function):
      return "the target has no \(function) (is it statically linked?); swpatch needs glibc's dynamic loader"
    case .dlopenFailed(let path, let reason):
      return "the target could not load \(path): \(reason)"
    case .drift(let oldAddr, let detail):
      return
        "memory at \(hexAddress(oldAddr)) is not what the registry recorded (\(detail)); something else changed the target, run `swpatch status`"
    case .notPatched(let pid):
      return "pid \(pid) has no swpatch patches; see `swpatch status`"
    case .threadInRewrittenBytes(let tid, let address):
      return
        "thread \(tid) stays at \(hexAddress(address)), inside bytes this operation rewrites, after being let run to leave them; nothing was changed, retry"
    case .buildIDMismatch(let object, let expected, let actual):
      guard let actual else {
        return
          "build id pin for '\(object)' does not hold: expected \(expected), actual: not loaded in the target; the patch was built for another program"
      }
      return
        "build id pin for '\(object)' does not hold: expected \(expected), actual \(actual.isEmpty ? "none" : actual); the patch was built for another version of \(object)"
    case .ifunc(let name, let object, let example):
      let hint = example.map { " (e.g. \($0))" } ?? ""
      return
        "'\(name)' in \(object) is an IFUNC resolver; patching it would not change the implementation the process uses — name the implementation\(hint) instead"
    case .libraryStore(let reason):
      return "the library store failed: \(reason); check the state directory's disk space and permissions"
    case .signatureMismatch(let old, let new):
      return "signature mismatch: \(old) vs \(new); use --force to patch anyway"
    case .branchIntoEntry(let function, let from, let to, let entry):
      return
        "function '\(function)' has a branch (at \(hexAddress(from))) back to \(function)+\(to - entry), inside the bytes the entry jump overwrites; it cannot be patched safely (patch its callers instead)"
    case .stackCheckTimedOut(let blocker, let retriedFor, let retries):
      return
        "\(blocker); retried for \(formatSeconds(retriedFor)) s (\(retries) retries); nothing was changed; try again later or use --consistency entry"
    case .transitionTimedOut(let blocker, let waited):
      return
        "\(blocker) and did not return from it within \(formatSeconds(waited)) s; the operation was undone (threads that had switched run the old versions again); try again later or use --consistency entry"
    case .unknownFunctionSize(let function, let address):
      return
        "cannot check stacks for '\(function)' at \(hexAddress(address)): its symbol has no size; nothing was changed; use --consistency entry"
    case .entryModified(let function, let address, let found, let file, let inherited):
      let why =
        inherited
        ? "it holds a swpatch jump inherited from a patched parent whose hooks no longer match this process"
        : "another tool (a debugger, Frida) may have written there"
      return
        "the entry of '\(function)' at \(hexAddress(address)) holds \(hexBytes(found)), not the object file's \(hexBytes(file)); \(why); nothing was changed"
    case .pageNotOurs(let address):
      return
        "the trampoline page at \(hexAddress(address)) no longer holds swpatch's header (did the process run execve?); nothing was written; run `swpatch status`"
    case .originalNotCallable(let function, let address):
      return
        "the original '\(function)' at \(hexAddress(address)) cannot be called through `prev`: its first instructions cannot be relocated; nothing was changed"
    case .badPrev(let name, let library, let reason):
      return
        "`prev` '\(name)' \(reason) in \(library); declare it as a function pointer, e.g. `int (*\(name))(int);`"
    case .libraryHasConstructors(let path, let functions):
      return
        "library \(path) runs code when loaded (\(functions.joined(separator: ", "))); a constructor that aborts, exits or blocks would take the target down with it; move that code out of constructors, or pass --allow-constructors"
    case .unresolvedExtern(let name, let library, let reason):
      return
        "the patch library \(library) references '\(name)', which binds nowhere in the target: \(reason); nothing was changed; fix the name (or `externs` in the patch file), or declare it weak if it may be missing"
    case .ambiguousExtern(let name, let library, let candidates):
      return
        "the patch library \(library) references '\(name)', which the target defines more than once (\(candidates)); pin one in the patch file: \"externs\": {\"\(name)\": {\"object\": ..., \"sympos\": N}}"
    case .externNotReferenced(let name, let library):
      return
        "`externs` pins '\(name)', which the patch library \(library) does not reference (not an undefined symbol of it: `nm -D --undefined-only`); remove the pin or fix its name"
    case .notELF(let path, let reason):
      return "--all-of \(path): \(reason); name the executable or shared library whose processes to change"
    }
  }
}

extension PatchError: CodedError {
  public var code: String {
    switch self {
    case .libraryMissing, .libraryUnusable: return "bad_library"
    case .tooShort: return "function_too_short"
    case .noMemoryNearby, .mmapFailed: return "no_memory"
    case .noLoader, .dlopenFailed: return "load_failed"
    case .drift: return "drift"
    case .notPatched: return "not_patched"
    case .threadInRewrittenBytes: return "thread_in_rewritten_bytes"
    case .buildIDMismatch: return "build_id_mismatch"
    case .ifunc: return "ifunc"
    case .libraryStore: return "state_dir"
    case .signatureMismatch: return "signature_mismatch"
    case .branchIntoEntry: return "branch_into_entry"
    case .stackCheckTimedOut, .transitionTimedOut: return "stack_check_timeout"
    case .unknownFunctionSize: return "unknown_function_size"
    case .entryModified: return "entry_modified"
    case .pageNotOurs: return "page_not_ours"
    case .libraryHasConstructors: return "library_has_constructors"
    case .originalNotCallable: return "prologue_not_relocatable"
    case .badPrev: return "bad_prev"
    case .unresolvedExtern: return "unresolved_extern"
    case .ambiguousExtern: return "ambiguous_symbol"
    case .externNotReferenced: return "bad_patch_file"
    case .notELF: return "not_elf"
    }
  }
}
