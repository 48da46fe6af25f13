import Foundation
import Glibc
import Testing

/// Patch files and requests at and past their limits: each refusal names the cause, uses
/// its documented code and changes nothing.
@Suite(.serialized, .needsRoot, .needsFixtures) struct PatchInputLimitsTests {
  /// Runs attach with the patch file `text` against a fresh loop fixture and checks the
  /// refusal (code, words, target untouched).
  func expectRefusal(
    _ text: (Workspace) -> String, code: String, mentions: [String],
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"), sourceLocation: sourceLocation)
    let compute = try address(of: "compute", in: target, workspace: ws)
    let path = ws.write("p.json", text(ws))
    try expectRefusedAttach(
      target, ws, path, code: code, mentions: mentions, watch: compute, sourceLocation: sourceLocation)
    #expect(storedLibraries(ws).isEmpty, sourceLocation: sourceLocation)
  }

  func patch(library: String = Paths.fixture("libfix.so"), id: String = "p", function: String? = nil)
    -> String
  {
    let entry = function ?? #"{"old": "compute", "new": "compute_v2"}"#
    return #"{"id": "\#(id)", "library": "\#(library)", "functions": [\#(entry)]}"#
  }

  @Test func aRepeatedKeyIsRefusedNotResolvedToOneOfItsValues() throws {
    // The first value is a good library: Foundation would have taken it and patched.
    try expectRefusal(
      { _ in
        #"{"id": "p", "library": "\#(Paths.fixture("libfix.so"))", "library": "/nonexistent.so", "functions": [{"old": "compute", "new": "compute_v2"}]}"#
      }, code: "bad_patch_file", mentions: ["'library' twice"])
    try expectRefusal(
      { _ in patch(function: #"{"old": "compute", "new": "compute_v2", "\u006Fld": "tiny"}"#) },
      code: "bad_patch_file", mentions: ["'functions[0].old' twice"])
  }

  @Test func symposPastItsBoundIsRefusedWithTheBound() throws {
    try expectRefusal(
      { _ in patch(function: #"{"old": "compute", "new": "compute_v2", "sympos": 9223372036854775807}"#) },
      code: "bad_patch_file", mentions: ["'functions[0].sympos' must be an integer between 1 and 65535"])
  }

  @Test func anIDLongerThan128CharactersIsRefused() throws {
    try expectRefusal(
      { _ in patch(id: String(repeating: "a", count: 10_000)) }, code: "bad_patch_file",
      mentions: ["'id' is 10000 characters long", "at most 128"])
    let ws = Workspace()
    let enable = ws.swpatch("enable", "\(getpid())", String(repeating: "b", count: 10_000), "--json")
    #expect(enable.status == 1)
    let error = enable.json?["error"] as? [String: Any]
    #expect(error?["code"] as? String == "bad_request", "\(enable.output)")
    #expect((error?["message"] as? String)?.contains("at most 128") == true, "\(enable.output)")
  }

  @Test func aLibraryThatIsNotAFileSaysWhatItIs() throws {
    try expectRefusal(
      { ws in patch(library: ws.directory) }, code: "bad_library", mentions: ["is a directory"])
    // Opening a FIFO without a writer would block the daemon's worker for good.
    try expectRefusal(
      { ws in
        let fifo = ws.directory + "/lib.fifo"
        mkfifo(fifo, 0o600)
        return patch(library: fifo)
      }, code: "bad_library", mentions: ["lib.fifo is a FIFO"])
    try expectRefusal({ _ in patch(library: "/dev/zero") }, code: "bad_library", mentions: ["is a device"])
  }

  @Test func aRefusedAttachLeavesNothingInTheLibraryStore() throws {
    try expectRefusal(
      { _ in patch(function: #"{"old": "no_such_fn", "new": "compute_v2"}"#) }, code: "symbol_not_found",
      mentions: ["'no_such_fn' not found"])
    // A dry run loads nothing either; an attach that loads keeps exactly its library.
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let path = ws.write("p.json", patch())
    #expect(ws.swpatch("attach", "\(target.pid)", path, "--dry-run").status == 0)
    #expect(storedLibraries(ws).isEmpty)
    #expect(ws.swpatch("attach", "\(target.pid)", path).status == 0)
    #expect(storedLibraries(ws) == [sha256sum(Paths.fixture("libfix.so")) + ".so"])
  }

  @Test func aPatchFileOverTheRequestLimitIsRefusedByTheClient() throws {
    let ws = Workspace()
    #expect(ws.swpatch("status").status == 0)
    let padding = String(repeating: " ", count: 50 << 20)
    let path = ws.write("huge.json", patch() + padding)
    let result = ws.swpatch("attach", "\(getpid())", path, "--json")
    #expect(result.status == 1)
    let error = result.json?["error"] as? [String: Any]
    #expect(error?["code"] as? String == "request_too_large", "\(result.output.prefix(300))")
    #expect((error?["message"] as? String)?.contains("patch file is too large") == true)
    #expect(ws.swpatch("status").status == 0)
  }
}

/// What the workspace daemon's library store holds (temporary files included).
func storedLibraries(_ ws: Workspace) -> [String] {
  (try? FileManager.default.contentsOfDirectory(atPath: ws.stateDir + "/libraries")) ?? []
}
