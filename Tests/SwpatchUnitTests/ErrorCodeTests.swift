import Foundation
import SwpatchBase
import SwpatchPatcher
import SwpatchProcess
import SwpatchRegistry
import SwpatchSymbols
import SystemPackage
import Testing

/// Every error names its own stable code, and every code is documented in docs/cli.md's
/// table, so scripts can rely on what they read there.
@Suite struct ErrorCodeTests {
  /// The codes of docs/cli.md's `| code | meaning |` table (first column, in backquotes).
  static let documented: Set<String> = {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent()
    let text = (try? String(contentsOf: root.appendingPathComponent("docs/cli.md"), encoding: .utf8)) ?? ""
    var codes: Set<String> = []
    for line in text.split(separator: "\n") where line.hasPrefix("| `") {
      let cell = line.dropFirst(2).prefix { $0 != "|" }
      for part in cell.split(separator: "`", omittingEmptySubsequences: false).enumerated()
      where part.offset % 2 == 1 {
        codes.insert(String(part.element))
      }
    }
    return codes
  }()

  static let samples: [any CodedError] = {
    let process: [ProcessError] = [
      .noSuchProcess(pid: 1), .kernelThread(pid: 2), .alreadyTraced(pid: 1, tracer: 2, tracerName: "gdb"),
      .permissionDenied(pid: 1, what: "trace"), .processExited(pid: 1),
      .ptrace(request: "GETREGS", tid: 1, errno: .noSuchProcess),
      .memory(address: 1, count: 1, write: true, errno: nil), .unexpectedStop(tid: 1, detail: ""),
      .remoteCallTimedOut(function: "dlopen", tid: 1, seconds: 1),
      .remoteCallFaulted(function: "dlopen", tid: 1, signal: 6, rip: 0),
      .remoteSyscallFailed(name: "mmap", errno: .noMemory), .noSyscallInstruction(pid: 1),
      .io(path: "/proc", errno: .ioError), .cannotStart(path: "/x", errno: .noSuchFileOrDirectory),
      .notAProcess(tid: 2, pid: 1), .ownProcess(pid: 1), .seccompStrict(pid: 1), .seccompFilter(pid: 1),
      .vforkInProgress(pid: 1, tid: 2), .stopTimedOut(pid: 1, tid: 2, seconds: 2),
    ]
    let symbols: [SymbolError] = [
      .processGone(pid: 1), .cannotOpen(path: "/x", reason: ""), .badLibrary(path: "/x", reason: ""),
      .notFound(name: "f", searched: []), .notInLibrary(name: "f", library: "/x"),
      .objectNotLoaded(object: "o", loaded: []), .ambiguousObject(object: "o", candidates: []),
      .ambiguousAcrossObjects(name: "f", objects: []),
      .symposOutOfRange(name: "f", sympos: 3, count: 1),
      .sourceFileNotFound(name: "f", file: "a.c", candidates: []),
      .sourceFileMismatch(name: "f", file: "a.c", sympos: 1, actual: "b.c"),
      .notAFunction(name: "f", object: "o", kind: "object"),
      .unwindFailed(pid: 1, reason: ""), .noPrototype(name: "f", object: "o", path: "/x"),
    ]
    let patcher: [PatchError] = [
      .libraryMissing(path: "/x"), .libraryUnusable(path: "/x", reason: "is a FIFO"),
      .tooShort(function: "f", size: 3, needed: 5),
      .noMemoryNearby(address: 1), .mmapFailed, .noLoader(function: "dlopen"),
      .dlopenFailed(path: "/x", reason: ""), .drift(oldAddr: 1, detail: ""), .notPatched(pid: 1),
      .threadInRewrittenBytes(tid: 1, address: 1), .buildIDMismatch(object: "o", expected: "aa", actual: nil),
      .ifunc(name: "f", object: "o", example: nil), .libraryStore(reason: ""),
      .signatureMismatch(old: "", new: ""), .branchIntoEntry(function: "f", from: 2, to: 3, entry: 1),
      .stackCheckTimedOut(blocker: "", retriedFor: 1, retries: 1),
      .unknownFunctionSize(function: "f", address: 1),
      .entryModified(function: "f", address: 1, found: [0xcc], file: [0x55], inherited: false),
      .pageNotOurs(address: 1), .libraryHasConstructors(path: "/x", functions: ["boom"]),
      .originalNotCallable(function: "f", address: 1), .badPrev(name: "p", library: "/x", reason: ""),
      .unresolvedExtern(name: "f", library: "/x", reason: ""),
      .ambiguousExtern(name: "f", library: "/x", candidates: ""),
      .externNotReferenced(name: "f", library: "/x"),
      .notELF(path: "/x", reason: "is not an ELF file"),
    ]
    let registry: [RegistryError] = [
      .alreadyEnabled(id: "p", pid: 1), .alreadyDisabled(id: "p", pid: 1),
      .unknownPatch(id: "p", pid: 1, known: []), .requiredBy(id: "p", dependants: ["q"]),
      .missingRequirement(id: "p", pid: 1, missing: ["q"]), .invalidPatch(id: "p", reason: ""),
      .policyMismatch(pid: 1, existing: .stack, requested: .any),
      .libraryChanged(id: "p", pid: 1, stored: "aa", new: "bb"), .patchEnabled(id: "p", pid: 1),
      .stillRequired(id: "p", dependants: ["q"]), .upgradeMismatch(id: "p", reason: ""),
    ]
    var errors: [any CodedError] = process + symbols + patcher + registry
    errors.append(PatchFileError(path: "/p.json", problem: "is not valid JSON"))
    return errors
  }()

  @Test func everyCodeAnErrorCanCarryIsDocumented() {
    #expect(Self.documented.count > 30, "docs/cli.md's code table was not found")
    for error in Self.samples {
      #expect(
        Self.documented.contains(error.code), "\(type(of: error)) '\(error.code)' is not in docs/cli.md")
      #expect(errorCode(error) == error.code)
    }
  }

  @Test func anErrorWithoutACodeIsCalledError() {
    struct Foreign: Error {}
    #expect(errorCode(Foreign()) == "error")
  }
}
