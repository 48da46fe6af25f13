import Foundation
import Glibc
import Testing

/// Every bad input exits non-zero with a one-line message, and leaves the target running
/// with the bytes of the old function untouched.
@Suite(.serialized, .needsRoot, .needsFixtures) struct BadInputTests {
  /// Runs `attach` with `patch` against a fresh loop fixture and checks the refusal.
  func expectRefusal(
    _ patch: (Workspace) -> String, mentions expected: [String], fixture: String = "loop",
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let ws = Workspace()
    let target = try Fixture(fixture, ["20"])
    #expect(target.waitForValue("compute", "42"), sourceLocation: sourceLocation)
    let compute = try address(of: "compute", in: target, workspace: ws)
    try expectRefusedAttach(
      target, ws, patch(ws), mentions: expected, watch: compute, sourceLocation: sourceLocation)
    #expect(target.output.all.last?.contains("compute=42") == true, sourceLocation: sourceLocation)
  }

  func fix(_ ws: Workspace) -> String {
    ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
  }

  @Test func pidThatDoesNotExist() {
    let ws = Workspace()
    var pid: Int32 = 4_000_000
    while kill(pid, 0) == 0 || errno != ESRCH { pid -= 1 }
    let result = ws.swpatch("attach", "\(pid)", fix(ws))
    #expect(result.status == 1)
    #expect(result.output.contains("no process with pid \(pid)"))
  }

  @Test func kernelThreadIsRefused() throws {
    let ws = Workspace()
    let kernel = try #require(kernelThreadPid(), "this machine shows no kernel thread in /proc")
    let result = ws.swpatch("attach", "\(kernel)", fix(ws))
    #expect(result.status == 1)
    #expect(result.output.contains("kernel thread"))
  }

  @Test func malformedPatchFile() throws {
    try expectRefusal({ $0.write("bad.json", "{ not json") }, mentions: ["not valid JSON"])
  }

  @Test func incompletePatchFile() throws {
    try expectRefusal(
      { $0.write("bad.json", #"{"id": "x", "library": "libfix.so"}"#) }, mentions: ["missing 'functions'"])
  }

  @Test func unknownKeyInPatchFile() throws {
    try expectRefusal(
      {
        $0.write(
          "bad.json", #"{"id": "x", "library": "/l.so", "functions": [{"old": "a", "new": "b", "sympo": 2}]}"#
        )
      },
      mentions: ["unknown key 'functions[0].sympo'"])
  }

  @Test func wrongTypeAndEmptyListInPatchFile() throws {
    try expectRefusal(
      { $0.write("bad.json", #"{"id": "x", "library": "/l.so", "functions": []}"#) },
      mentions: ["must not be empty"])
    try expectRefusal(
      { $0.write("bad.json", #"{"id": "x", "library": 5, "functions": [{"old": "a", "new": "b"}]}"#) },
      mentions: ["'library' must be a string"])
  }

  @Test func libraryThatDoesNotExist() throws {
    try expectRefusal(
      { $0.patchFile("p", library: "libnothere.so", functions: [("compute", "compute_v2")]) },
      mentions: ["libnothere.so does not exist"])
  }

  @Test func libraryThatIsNotELF() throws {
    try expectRefusal(
      { ws in
        let lib = ws.write("libtext.so", "just text\n")
        return ws.write(
          "p.json",
          #"{"id": "p", "library": "\#(lib)", "functions": [{"old": "compute", "new": "compute_v2"}]}"#)
      }, mentions: ["libtext.so", "not an ELF file"])
  }

  @Test func libraryThatIsNotASharedObject() throws {
    try expectRefusal(
      { $0.patchFile("p", library: "libfix.o", functions: [("compute", "compute_v2")]) },
      mentions: ["not a shared object"])
  }

  @Test func libraryThatIsNotX86_64() throws {
    try expectRefusal(
      { ws in
        // The real library with e_machine set to AArch64 (183).
        var bytes = [UInt8](FileManager.default.contents(atPath: Paths.fixture("libfix.so"))!)
        bytes[18] = 183
        bytes[19] = 0
        let lib = ws.directory + "/libarm.so"
        _ = FileManager.default.createFile(atPath: lib, contents: Data(bytes))
        return ws.write(
          "p.json",
          #"{"id": "p", "library": "\#(lib)", "functions": [{"old": "compute", "new": "compute_v2"}]}"#)
      }, mentions: ["not built for x86-64"])
  }

  @Test func oldSymbolThatDoesNotExist() throws {
    try expectRefusal(
      { $0.patchFile("p", library: "libfix.so", functions: [("no_such_fn", "compute_v2")]) },
      mentions: ["'no_such_fn' not found"])
  }

  @Test func newSymbolThatDoesNotExist() throws {
    try expectRefusal(
      { $0.patchFile("p", library: "libfix.so", functions: [("compute", "compute_v9")]) },
      mentions: ["'compute_v9' is not defined in the patch library"])
  }

  @Test func ambiguousOldListsEveryCandidate() throws {
    try expectRefusal(
      { $0.patchFile("p", library: "libfix.so", functions: [("helper", "helper_v2")]) },
      mentions: ["ambiguous", "sympos 1", "sympos 2", "set `sympos`"])
  }

  @Test func functionTooShortForTheJump() throws {
    try expectRefusal(
      { $0.patchFile("p", library: "libfix.so", functions: [("tiny", "compute_v2")]) },
      mentions: ["'tiny' is 3 bytes long; a jump needs 5"])
  }

  @Test func dataSymbolIsNotAFunction() throws {
    try expectRefusal(
      { $0.patchFile("p", library: "libfix.so", functions: [("counter", "compute_v2")]) },
      mentions: ["not a function"])
  }

  @Test func libraryTheTargetCannotLoadReportsDlerror() throws {
    let ws = Workspace()
    // The reference swpatch leaves to the loader (libplugin.so exports it) fails there:
    // the plugin was loaded RTLD_LOCAL, outside the loader's global scope.
    let target = try Fixture("places", ["20"])
    #expect(target.waitForValue("plugin", "2001"))
    let compute = try address(of: "shared_value", in: target, workspace: ws)
    let before = target.memory(at: compute, count: 16)
    let patch = ws.patchFile("bad", library: "libbad.so", functions: [("shared_value", "shared_bad")])
    let result = ws.swpatch("attach", "\(target.pid)", patch)
    #expect(result.status == 1)
    #expect(result.output.contains("undefined symbol: plugin_value"), "\(result.output)")
    // The message names the library as the operator gave it, not the target's
    // /proc/thread-self/fd/N it was loaded through.
    #expect(result.output.contains(Paths.fixture("libbad.so") + ": undefined symbol"), "\(result.output)")
    #expect(!result.output.contains("/fd/"), "\(result.output)")
    #expect(target.memory(at: compute, count: 16) == before)
    #expect(target.keepsRunning())
    let status = ws.swpatch("status", "--json")
    #expect((status.json?["targets"] as? [Any])?.isEmpty == true, "\(status.output)")
  }

  @Test func targetAlreadyTracedByAnotherTracer() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let tracer = try Fixture("tracer", ["\(target.pid)"])
    defer { tracer.stop() }
    #expect(tracer.output.wait { $0.hasPrefix("traced=") } != nil)
    let compute = try address(of: "compute", in: target, workspace: ws)
    let before = target.memory(at: compute, count: 16)
    let result = ws.swpatch("attach", "\(target.pid)", fix(ws))
    #expect(result.status == 1)
    #expect(result.output.contains("already traced by pid \(tracer.pid)"), "\(result.output)")
    #expect(target.memory(at: compute, count: 16) == before)
    #expect(target.keepsRunning())
  }

  func kernelThreadPid() -> Int32? {
    for pid in Int32(2)..<Int32(200) {
      guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
      else { continue }
      let fields = stat[stat.index(after: close)...].split(separator: " ")
      if let flags = UInt64(fields[6]), flags & 0x0020_0000 != 0 { return pid }
    }
    return nil
  }
}
