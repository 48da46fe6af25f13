import Foundation
import Glibc
import Testing

/// A patch names objects and statics by the names people use: `object` by file name,
/// SONAME or full path (on a library whose file name and SONAME differ, as packaged
/// ones do), and a static function by the source file that defines it (`file`).
@Suite(.serialized, .needsRoot, .needsFixtures) struct ObjectNamesTests {
  func patch(
    _ ws: Workspace, _ id: String, old: String, new: String, library: String, entry: String = "",
    extra: String = ""
  ) -> String {
    ws.write(
      id + ".json",
      #"{"id": "\#(id)", "library": "\#(Paths.fixture(library))", "functions": [{"old": "\#(old)", "new": "\#(new)"\#(entry)}]\#(extra)}"#
    )
  }

  func symbols(_ name: String, in target: Fixture, _ ws: Workspace) throws -> [[String: Any]] {
    let result = ws.swpatch("symbols", "\(target.pid)", name, "--json")
    return try #require(
      (try? JSONSerialization.jsonObject(with: Data(result.output.utf8))) as? [[String: Any]],
      "\(result.output)")
  }

  @Test func objectBySonameAndByPathIsPlannedAsByFileName() throws {
    let ws = Workspace()
    let target = try Fixture("named", ["20"])
    defer { target.stop() }
    #expect(target.waitForValue("named", "11"))
    let found = try #require(try symbols("named_value", in: target, ws).first)
    #expect(found["object"] as? String == "libnamed.so.1.2.3")
    #expect(found["soname"] as? String == "libnamed.so.1")
    let path = try #require(found["path"] as? String)
    #expect(path == Paths.fixture("libnamed.so.1.2.3"))

    func plan(_ object: String, extra: String = "") throws -> [String] {
      let file = patch(
        ws, "fix-named", old: "named_value", new: "named_value_v2", library: "libnamedfix.so",
        entry: #", "object": "\#(object)""#, extra: extra)
      let result = ws.swpatch("attach", "\(target.pid)", file, "--dry-run", "--json")
      #expect(result.status == 0, "\(object): \(result.output)")
      return try #require(result.json?["plan"] as? [String], "\(result.output)")
    }
    let byFileName = try plan("libnamed.so.1.2.3")
    #expect(byFileName.count == 1)
    #expect(try plan("libnamed.so.1") == byFileName)
    #expect(try plan(path) == byFileName)
    // The symlink the loader found it by: another path to the same inode.
    #expect(try plan(Paths.fixture("libnamed.so.1")) == byFileName)
    let buildID = try #require(found["build_id"] as? String)
    #expect(
      try plan("libnamed.so.1", extra: #", "build_ids": {"libnamed.so.1": "\#(buildID)"}"#) == byFileName)

    let unknown = patch(
      ws, "fix-none", old: "named_value", new: "named_value_v2", library: "libnamedfix.so",
      entry: #", "object": "libnamed.so.2""#)
    let refused = ws.swpatch("attach", "\(target.pid)", unknown, "--dry-run", "--json")
    #expect(refused.status == 1)
    #expect((refused.json?["error"] as? [String: Any])?["code"] as? String == "object_not_loaded")

    let bySoname = patch(
      ws, "fix-named", old: "named_value", new: "named_value_v2", library: "libnamedfix.so",
      entry: #", "object": "libnamed.so.1""#)
    let attached = ws.swpatch("attach", "\(target.pid)", bySoname)
    #expect(attached.status == 0, "\(attached.output)")
    #expect(target.waitForValue("named", "81", from: target.output.count))
  }

  @Test func aNameThatFitsTwoObjectsIsRefusedListingBoth() throws {
    let ws = Workspace()
    // A copy of the library under another file name: two objects, one SONAME.
    let copy = ws.directory + "/libnamed-copy.so"
    try FileManager.default.copyItem(atPath: Paths.fixture("libnamed.so.1.2.3"), toPath: copy)
    let target = try Fixture("named", ["20", copy])
    defer { target.stop() }
    #expect(target.waitForValue("named", "11"))
    let found = try symbols("named_value", in: target, ws)
    #expect(found.count == 2, "\(found)")
    #expect(found.allSatisfy { $0["soname"] as? String == "libnamed.so.1" })
    let watch = try #require(UInt64(((found.first?["address"] as? String) ?? "").dropFirst(2), radix: 16))

    let bySoname = patch(
      ws, "fix-named", old: "named_value", new: "named_value_v2", library: "libnamedfix.so",
      entry: #", "object": "libnamed.so.1""#)
    try expectRefusedAttach(
      target, ws, bySoname, code: "ambiguous_object",
      mentions: ["libnamed.so.1", Paths.fixture("libnamed.so.1.2.3"), copy], watch: watch)
    // The full path picks one of them.
    let byPath = patch(
      ws, "fix-named", old: "named_value", new: "named_value_v2", library: "libnamedfix.so",
      entry: #", "object": "\#(copy)""#)
    let dry = ws.swpatch("attach", "\(target.pid)", byPath, "--dry-run", "--json")
    #expect(dry.status == 0, "\(dry.output)")
  }

  @Test func staticsAreListedWithTheirFilesAndPickedByFile() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    defer { target.stop() }
    #expect(target.waitForValue("helper2", "2"))
    let helpers = try symbols("helper", in: target, ws)
    #expect(helpers.count == 2)
    let files = helpers.compactMap { $0["source_file"] as? String }
    #expect(files.count == 2, "\(helpers)")
    #expect(files.contains { $0.hasSuffix("/loop.c") || $0 == "loop.c" })
    #expect(files.contains { $0.hasSuffix("/loop_helper.c") || $0 == "loop_helper.c" })
    #expect(helpers.allSatisfy { ($0["source_line"] as? Int ?? 0) > 0 && ($0["size"] as? Int ?? 0) > 0 })
    let helperAddress = try #require(
      helpers.first { ($0["source_file"] as? String)?.hasSuffix("loop_helper.c") == true }?["address"]
        as? String)
    let sympos = try #require(
      helpers.first { ($0["source_file"] as? String)?.hasSuffix("loop_helper.c") == true }?["sympos"] as? Int)
    let watch = try #require(UInt64(helperAddress.dropFirst(2), radix: 16))

    // Named alone, the two are ambiguous, and the refusal names their files.
    let bare = patch(ws, "fix-helper", old: "helper", new: "helper_v2", library: "libfix.so")
    try expectRefusedAttach(
      target, ws, bare, code: "ambiguous_symbol", mentions: ["loop.c:", "loop_helper.c:", "`file`"],
      watch: watch)
    let unknown = patch(
      ws, "fix-helper", old: "helper", new: "helper_v2", library: "libfix.so",
      entry: #", "file": "nowhere.c""#)
    try expectRefusedAttach(
      target, ws, unknown, code: "unknown_source_file", mentions: ["nowhere.c", "loop.c", "loop_helper.c"],
      watch: watch)
    let mismatch = patch(
      ws, "fix-helper", old: "helper", new: "helper_v2", library: "libfix.so",
      entry: #", "file": "loop_helper.c", "sympos": \#(3 - sympos)"#)
    try expectRefusedAttach(
      target, ws, mismatch, code: "source_file_mismatch", mentions: ["loop_helper.c", "loop.c"], watch: watch)

    let both = patch(
      ws, "fix-helper", old: "helper", new: "helper_v2", library: "libfix.so",
      entry: #", "file": "Fixtures/loop_helper.c", "sympos": \#(sympos)"#)
    let dry = ws.swpatch("attach", "\(target.pid)", both, "--dry-run")
    #expect(dry.status == 0, "\(dry.output)")
    // A full path that ends in the relative path DWARF records matches too.
    let full = patch(
      ws, "fix-helper", old: "helper", new: "helper_v2", library: "libfix.so",
      entry: #", "file": "/somewhere/checkout/Fixtures/loop_helper.c", "sympos": \#(sympos)"#)
    let fullDry = ws.swpatch("attach", "\(target.pid)", full, "--dry-run")
    #expect(fullDry.status == 0, "\(fullDry.output)")

    let byFile = patch(
      ws, "fix-helper", old: "helper", new: "helper_v2", library: "libfix.so",
      entry: #", "file": "loop_helper.c""#)
    let attached = ws.swpatch("attach", "\(target.pid)", byFile)
    #expect(attached.status == 0, "\(attached.output)")
    #expect(target.waitForValue("helper2", "42", from: target.output.count))
    #expect(target.output.all.last?.contains(" helper=1 ") == true)
  }
}
