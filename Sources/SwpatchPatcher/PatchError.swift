/// Why the patcher refused or abandoned an operation. The target is unchanged whenever
/// one of these is thrown.
public enum PatchError: Error, CustomStringConvertible, Sendable {
  case libraryMissing(path: String)
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

  public var description: String {
    switch self {
    case .libraryMissing(let path):
      return
        "library \(path) does not exist; fix `library` in the patch file (relative paths start at the patch file's folder)"
    case .tooShort(let function, let size, let needed):
      return "function '\(function)' is \(size) bytes long; a jump needs \(needed) (patch a caller instead)"
    case .noMemoryNearby(let address):
      return
        "no free memory within ±2 GiB of 0x\(String(address, radix: 16)) for a trampoline, and the function is too short for a 14-byte absolute jump"
    case .mmapFailed:
      return "mmap in the target failed; the target may be out of memory or address space"
    case .noLoader(let function):
      return "the target has no \(function) (is it statically linked?); swpatch needs glibc's dynamic loader"
    case .dlopenFailed(let path, let reason):
      return "the target could not load \(path): \(reason)"
    case .drift(let oldAddr, let detail):
      return
        "memory at 0x\(String(oldAddr, radix: 16)) is not what the registry recorded (\(detail)); something else changed the target, run `swpatch status`"
    case .notPatched(let pid):
      return "pid \(pid) has no swpatch patches; see `swpatch status`"
    case .threadInRewrittenBytes(let tid, let address):
      return
        "thread \(tid) stays at 0x\(String(address, radix: 16)), inside bytes this operation rewrites, after being let run to leave them; nothing was changed, retry"
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
    }
  }
}
