import Foundation
import Glibc
import SwpatchPatcher
import Testing

/// Functions wherever they live (non-PIE executable, own shared library, system library,
/// dlopened plugin, deleted binary), and the patches that must be refused: build-id pins
/// that do not hold, IFUNC resolvers. Each success is checked in the fixture's output.
@Suite(.serialized, .needsRoot, .needsFixtures) struct WhereFunctionsLiveTests {
  /// A patch file with one function, `object` and extra top-level JSON as given.
  func patch(
    _ ws: Workspace, _ id: String, old: String, new: String, object: String? = nil,
    library: String = "libplaces.so", extra: String = ""
  ) -> String {
    let objectKey = object.map { #", "object": "\#($0)""# } ?? ""
    return ws.write(
      id + ".json",
      #"{"id": "\#(id)", "library": "\#(Paths.fixture(library))", "functions": [{"old": "\#(old)", "new": "\#(new)"\#(objectKey)}]\#(extra)}"#
    )
  }

  /// `swpatch symbols --json` for one name: its first match.
  func symbol(_ name: String, in target: Fixture, _ ws: Workspace) throws -> [String: Any] {
    let result = ws.swpatch("symbols", "\(target.pid)", name, "--json")
    let lines = try #require(
      (try? JSONSerialization.jsonObject(with: Data(result.output.utf8))) as? [[String: Any]],
      "\(result.output)")
    return try #require(lines.first)
  }

  // MARK: Where functions live

  @Test func nonPIEExecutable() throws {
    let ws = Workspace()
    let target = try Fixture("loop-nopie", ["20"])
    #expect(target.waitForValue("compute", "42"))
    // Linked at 0x400000: the runtime address is the link-time one.
    let compute = try address(of: "compute", in: target, workspace: ws)
    #expect(compute < 0x1000_0000, "compute at 0x\(String(compute, radix: 16))")
    let path = patch(ws, "fix-compute", old: "compute", new: "compute_v2", library: "libfix.so")
    let result = ws.swpatch("attach", "\(target.pid)", path)
    #expect(result.status == 0, "\(result.output)")
    #expect(target.waitForValue("compute", "63", from: target.output.count))
    #expect(target.keepsRunning())
  }

  @Test func ownSharedLibraryLinkedAtStart() throws {
    let ws = Workspace()
    let target = try Fixture("places", ["20"])
    #expect(target.waitForValue("shared", "1001"))
    #expect(try symbol("shared_value", in: target, ws)["object"] as? String == "libshared.so")
    let path = patch(ws, "fix-shared", old: "shared_value", new: "shared_value_v2", object: "libshared.so")
    let result = ws.swpatch("attach", "\(target.pid)", path)
    #expect(result.status == 0, "\(result.output)")
    #expect(target.waitForValue("shared", "5001", from: target.output.count))
    #expect(target.output.all.last?.contains(" cbrt=3.000 ") == true)
  }

  @Test func systemLibraryFunctionThroughAPointer() throws {
    let ws = Workspace()
    let target = try Fixture("places", ["20"])
    #expect(target.waitForValue("cbrt", "3.000"))
    let path = patch(ws, "fix-cbrt", old: "cbrt", new: "cbrt_v2", object: "libm.so.6")
    let result = ws.swpatch("attach", "\(target.pid)", path)
    #expect(result.status == 0, "\(result.output)")
    #expect(target.waitForValue("cbrt", "42.000", from: target.output.count))
    #expect(target.output.all.last?.contains(" shared=1001 ") == true)
  }

  @Test func objectDlopenedAfterStart() throws {
    let ws = Workspace()
    let target = try Fixture("places", ["20"])
    #expect(target.waitForValue("plugin", "0"))
    #expect(target.waitForValue("plugin", "2001"))
    #expect(try symbol("plugin_value", in: target, ws)["object"] as? String == "libplugin.so")
    let path = patch(ws, "fix-plugin", old: "plugin_value", new: "plugin_value_v2", object: "libplugin.so")
    let result = ws.swpatch("attach", "\(target.pid)", path)
    #expect(result.status == 0, "\(result.output)")
    #expect(target.waitForValue("plugin", "7001", from: target.output.count))
  }

  @Test func deletedBinaryIsReadThroughMapFiles() throws {
    let ws = Workspace()
    let copy = ws.directory + "/loop-deleted"
    try FileManager.default.copyItem(atPath: Paths.fixture("loop"), toPath: copy)
    let target = try Fixture(path: copy, ["20"])
    #expect(target.waitForValue("compute", "42"))
    try FileManager.default.removeItem(atPath: copy)
    let maps = try String(contentsOfFile: "/proc/\(target.pid)/maps", encoding: .utf8)
    #expect(maps.contains("loop-deleted (deleted)"))
    let compute = try symbol("compute", in: target, ws)
    #expect(compute["object"] as? String == "loop-deleted", "\(compute)")
    let path = patch(ws, "fix-compute", old: "compute", new: "compute_v2", library: "libfix.so")
    let result = ws.swpatch("attach", "\(target.pid)", path)
    #expect(result.status == 0, "\(result.output)")
    #expect(target.waitForValue("compute", "63", from: target.output.count))
  }

  // MARK: Build-id pins

  @Test func buildIDPinThatDoesNotHoldIsRefused() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let info = try symbol("compute", in: target, ws)
    let actual = try #require(info["build_id"] as? String)
    let compute = try address(of: "compute", in: target, workspace: ws)
    let wrong = String(repeating: "ab", count: 20)
    let mismatch = patch(
      ws, "pinned", old: "compute", new: "compute_v2", library: "libfix.so",
      extra: #", "build_ids": {"loop": "\#(wrong)"}"#)
    try expectRefusedAttach(
      target, ws, mismatch, code: "build_id_mismatch", mentions: ["'loop'", wrong, actual],
      watch: compute)
    let absent = patch(
      ws, "pinned", old: "compute", new: "compute_v2", library: "libfix.so",
      extra: #", "build_ids": {"libnothere.so": "abcd"}"#)
    try expectRefusedAttach(
      target, ws, absent, code: "build_id_mismatch", mentions: ["'libnothere.so'", "abcd", "not loaded"],
      watch: compute)
    #expect(target.output.all.last?.contains("compute=42") == true)
  }

  @Test func buildIDPinThatHoldsIsAccepted() throws {
    let ws = Workspace()
    let target = try Fixture("places", ["20"])
    #expect(target.waitForValue("shared", "1001"))
    let exe = try #require(try symbol("main", in: target, ws)["build_id"] as? String)
    let lib = try #require(try symbol("shared_value", in: target, ws)["build_id"] as? String)
    let path = patch(
      ws, "pinned", old: "shared_value", new: "shared_value_v2", object: "libshared.so",
      extra: #", "build_ids": {"places": "\#(exe)", "libshared.so": "\#(lib)"}"#)
    let result = ws.swpatch("attach", "\(target.pid)", path)
    #expect(result.status == 0, "\(result.output)")
    #expect(target.waitForValue("shared", "5001", from: target.output.count))
  }

  @Test func buildIDsKeyIsStrict() {
    func problem(_ buildIDs: String) -> String {
      let text =
        #"{"id": "p", "library": "/l.so", "functions": [{"old": "a", "new": "b"}], "build_ids": \#(buildIDs)}"#
      do {
        _ = try PatchFile.parse(Data(text.utf8), path: "p.json", folder: "/")
        return "accepted"
      } catch {
        return error.problem
      }
    }
    #expect(problem("[]").contains("must be an object"))
    #expect(problem("{}").contains("must not be empty"))
    #expect(problem(#"{"app": 5}"#).contains("must be an object mapping"))
    #expect(problem(#"{"app": "ABCD"}"#).contains("must be lowercase hex"))
    #expect(problem(#"{"app": "abc"}"#).contains("must be lowercase hex"))
    #expect(problem(#"{"app": "abcd", "libc.so.6": "0f"}"#) == "accepted")
  }

  // MARK: IFUNC

  @Test func ifuncResolverIsRefusedAndItsImplementationPatched() throws {
    let ws = Workspace()
    let target = try Fixture("ifunc", ["20"])
    #expect(target.waitForValue("pick", "42"))
    #expect(try symbol("pick", in: target, ws)["kind"] as? String == "ifunc")
    let fast = try address(of: "pick_fast", in: target, workspace: ws)
    try expectRefusedAttach(
      target, ws, patch(ws, "fix-pick", old: "pick", new: "pick_fast_v2"), code: "ifunc",
      mentions: ["'pick' in ifunc is an IFUNC resolver", "name the implementation (e.g. pick_fast)"],
      watch: fast)
    #expect(target.output.all.last?.contains("pick=42") == true)
    let result = ws.swpatch(
      "attach", "\(target.pid)", patch(ws, "fix-fast", old: "pick_fast", new: "pick_fast_v2"))
    #expect(result.status == 0, "\(result.output)")
    #expect(target.waitForValue("pick", "100", from: target.output.count))
  }

  @Test func systemIFUNCIsRefused() throws {
    let ws = Workspace()
    let target = try Fixture("places", ["20"])
    #expect(target.waitForValue("floor", "2.0"))
    #expect(target.waitForValue("plugin", "2001"))  // its dlopen changes the mappings
    let shared = try address(of: "shared_value", in: target, workspace: ws)
    try expectRefusedAttach(
      target, ws, patch(ws, "fix-floor", old: "floor", new: "cbrt_v2", object: "libm.so.6"),
      code: "ifunc", mentions: ["'floor' in libm.so.6 is an IFUNC resolver"], watch: shared)
    #expect(target.output.all.last?.contains(" floor=2.0 ") == true)
  }

  // MARK: Compiler clones

  @Test func clonesAreListedAndNamedInAttachNotes() throws {
    let ws = Workspace()
    let target = try Fixture("clones", ["20"])
    #expect(target.waitForValue("pointer", "21"))
    let info = try symbol("scaled", in: target, ws)
    #expect(info["clones"] as? [String] == ["scaled.constprop.0"], "\(info)")
    let text = ws.swpatch("symbols", "\(target.pid)", "scaled")
    #expect(text.output.contains("clones=scaled.constprop.0"), "\(text.output)")
    #expect(text.output.contains("build_id=\(info["build_id"] as? String ?? "?")"), "\(text.output)")
    let result = ws.swpatch(
      "attach", "\(target.pid)", patch(ws, "fix-scaled", old: "scaled", new: "scaled_v2"))
    #expect(result.status == 0, "\(result.output)")
    #expect(
      result.output.contains(
        "note: scaled has compiler clones (scaled.constprop.0); callers may reach those instead"),
      "\(result.output)")
    // The call through the pointer reaches `scaled`; the direct call reaches the clone.
    #expect(target.waitForValue("pointer", "921", from: target.output.count))
    #expect(target.output.all.last?.contains("direct=21 ") == true)
  }
}
