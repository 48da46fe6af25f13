import Foundation
import Glibc
import Testing

/// A replacement uses the target's internals by their C names: a static function and a
/// static variable of a PIE executable, a hidden function and a static variable of its
/// own library, one of two statics of one name picked with `externs`; a reference that
/// binds nowhere is refused before the target is touched.
@Suite(.serialized, .needsRoot, .needsFixtures) struct ExternsTests {
  func patch(
    _ ws: Workspace, _ id: String, library: String, new: String, old: String = "compute",
    object: String? = nil, extra: String = ""
  ) -> String {
    let objectKey = object.map { #", "object": "\#($0)""# } ?? ""
    return ws.write(
      id + ".json",
      #"{"id": "\#(id)", "library": "\#(Paths.fixture(library))", "functions": [{"old": "\#(old)", "new": "\#(new)"\#(objectKey)}]\#(extra)}"#
    )
  }

  /// The `externs` lines of a `--json` report, by name.
  func externs(_ result: CLIResult) throws -> [String: [String: Any]] {
    let json = try #require(result.json, "\(result.output)")
    let lines = try #require(json["externs"] as? [[String: Any]], "no externs key: \(result.output)")
    return Dictionary(uniqueKeysWithValues: lines.map { ($0["name"] as? String ?? "", $0) })
  }

  /// The value of `key=` on the newest line that has it.
  func lastValue(_ key: String, in target: Fixture) -> Int? {
    for line in target.output.all.reversed() {
      for field in line.split(separator: " ") where field.hasPrefix(key + "=") {
        return Int(field.dropFirst(key.count + 1))
      }
    }
    return nil
  }

  @Test func staticFunctionAndVariableOfAPIEExecutable() throws {
    let ws = Workspace()
    let target = try Fixture("internals", ["20"])
    #expect(target.waitForValue("compute", "43"))
    #expect(target.waitForValue("counter", "0"))
    let path = patch(ws, "ext-exe", library: "libextern-exe.so", new: "compute_ext")
    let scale = try address(of: "scale", in: target, workspace: ws)

    let dry = ws.swpatch("attach", "\(target.pid)", path, "--dry-run", "--json")
    #expect(dry.status == 0, "\(dry.output)")
    let planned = try externs(dry)
    #expect(planned["scale"]?["binds_to"] as? String == "swpatch")
    #expect(planned["scale"]?["object"] as? String == "internals")
    #expect(planned["scale"]?["address"] as? String == "0x" + String(scale, radix: 16))
    #expect(planned["counter"]?["binds_to"] as? String == "swpatch")
    #expect(planned["__cxa_finalize"]?["binds_to"] as? String == "loader")
    #expect(planned["__cxa_finalize"]?["object"] as? String == "libc.so.6")
    #expect(planned["__gmon_start__"]?["binds_to"] as? String == "nowhere")

    let result = ws.swpatch("attach", "\(target.pid)", path)
    #expect(result.status == 0, "\(result.output)")
    #expect(
      result.output.contains("scale") && result.output.contains("swpatch: internals"), "\(result.output)")
    // scale(21) * 100, and the replacement's writes to the static counter, seen by main.
    #expect(target.waitForValue("compute", "4200", from: target.output.count))
    // The replacement's writes to the static counter, seen by main (the line with 3 may
    // already have gone by while the test waited for compute=4200).
    #expect(
      target.output.wait(from: 0) { line in
        line.split(separator: " ").contains { $0.hasPrefix("counter=") && (Int($0.dropFirst(8)) ?? 0) >= 3 }
      } != nil)
    #expect(target.keepsRunning())
    #expect((lastValue("counter", in: target) ?? 0) > 3)
  }

  @Test func hiddenFunctionAndStaticVariableOfItsOwnLibrary() throws {
    let ws = Workspace()
    let target = try Fixture("internals", ["20"])
    #expect(target.waitForValue("lib", "103"))
    let path = patch(
      ws, "ext-lib", library: "libextern-lib.so", new: "lib_value_ext", old: "lib_value",
      object: "libinternal.so")
    let result = ws.swpatch("attach", "\(target.pid)", path, "--json")
    #expect(result.status == 0, "\(result.output)")
    let bound = try externs(result)
    #expect(bound["lib_scale"]?["object"] as? String == "libinternal.so")
    #expect(bound["lib_count"]?["binds_to"] as? String == "swpatch")
    // lib_scale(1) + 7000, and lib_count written by the replacement (+10 a call).
    let mark = target.output.count
    #expect(target.waitForValue("lib", "7003", from: mark))
    // At least three calls of the replacement (the line with 30 may already have gone by).
    #expect(
      target.output.wait(from: mark) { line in
        line.split(separator: " ").contains { $0.hasPrefix("libcount=") && (Int($0.dropFirst(9)) ?? 0) >= 30 }
      } != nil)
    #expect(target.output.all.last?.contains(" compute=43 ") == true)
  }

  @Test func aLocalDefinedInTwoFilesIsPickedWithSympos() throws {
    let ws = Workspace()
    let target = try Fixture("internals", ["20"])
    #expect(target.waitForValue("compute", "43"))
    let compute = try address(of: "compute", in: target, workspace: ws)
    let ambiguous = patch(ws, "ext-pick", library: "libextern-pick.so", new: "compute_pick")
    try expectRefusedAttach(
      target, ws, ambiguous, code: "ambiguous_symbol",
      mentions: ["'helper'", "sympos 1", "sympos 2", "externs"],
      watch: compute)

    let pinned = patch(
      ws, "ext-pick2", library: "libextern-pick.so", new: "compute_pick",
      extra: #", "externs": {"helper": {"object": "internals", "sympos": 2}}"#)
    let result = ws.swpatch("attach", "\(target.pid)", pinned)
    #expect(result.status == 0, "\(result.output)")
    // internals_other.c's helper is x + 2: (21 + 2) * 1000.
    #expect(target.waitForValue("compute", "23000", from: target.output.count))
  }

  @Test func aReferenceThatBindsNowhereIsRefusedBeforeTheTargetIsTouched() throws {
    let ws = Workspace()
    let target = try Fixture("internals", ["20"])
    #expect(target.waitForValue("compute", "43"))
    let compute = try address(of: "compute", in: target, workspace: ws)
    let path = patch(ws, "ext-missing", library: "libextern-missing.so", new: "compute_missing")
    // The weak maybe_there binding nowhere is fine; no_such_internal is not.
    try expectRefusedAttach(
      target, ws, path, code: "unresolved_extern", mentions: ["no_such_internal", "libextern-missing.so"],
      watch: compute, options: ["--dry-run"])
    try expectRefusedAttach(
      target, ws, path, code: "unresolved_extern", mentions: ["no_such_internal"], watch: compute)
    #expect(!target.output.all.contains { $0.contains("compute=") && !$0.contains("compute=43") })
  }

  @Test func attachWarnsWhenTheLibraryCallsTheNameItReplaces() throws {
    let ws = Workspace()
    let target = try Fixture("internals", ["20"])
    #expect(target.waitForValue("compute", "43"))
    let path = patch(ws, "ext-recurse", library: "libextern-recurse.so", new: "compute_recurse")
    let dry = ws.swpatch("attach", "\(target.pid)", path, "--dry-run", "--json")
    #expect(dry.status == 0, "\(dry.output)")
    let notes = try #require(dry.json?["notes"] as? [String], "\(dry.output)")
    #expect(notes.contains { $0.hasPrefix("warning:") && $0.contains("'compute'") && $0.contains("prev") })
    let text = ws.swpatch("attach", "\(target.pid)", path)
    #expect(text.status == 0, "\(text.output)")
    #expect(text.output.contains("note: warning: the library references 'compute'"), "\(text.output)")
    #expect(target.waitForValue("compute", "5", from: target.output.count))
  }

  @Test func aPinForANameTheLibraryDoesNotReferenceIsRefused() throws {
    let ws = Workspace()
    let target = try Fixture("internals", ["20"])
    #expect(target.waitForValue("compute", "43"))
    let compute = try address(of: "compute", in: target, workspace: ws)
    let path = patch(
      ws, "ext-typo", library: "libextern-exe.so", new: "compute_ext",
      extra: #", "externs": {"scael": {"sympos": 1}}"#)
    try expectRefusedAttach(
      target, ws, path, code: "bad_patch_file", mentions: ["'scael'", "does not reference"], watch: compute)
  }
}
