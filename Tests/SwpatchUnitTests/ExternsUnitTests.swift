import Foundation
import SwpatchPatcher
import SwpatchSymbols
import Testing

/// The pure parts of binding a library's references to the target's internals: the
/// patch file's `externs`, and the `.dynsym` rewrite on a real library.
@Suite struct ExternsUnitTests {
  func parse(_ externs: String) throws(PatchFileError) -> PatchFile {
    let text =
      #"{"id": "p", "library": "/l.so", "functions": [{"old": "f", "new": "g"}], "externs": \#(externs)}"#
    return try PatchFile.parse(Data(text.utf8), path: "p.json", folder: "/")
  }

  func problem(_ externs: String) -> String? {
    do {
      _ = try parse(externs)
      return nil
    } catch {
      return error.problem
    }
  }

  @Test func externsPinObjectAndSympos() throws {
    let file = try parse(#"{"helper": {"object": "app", "sympos": 2}, "counter": {"sympos": 1}}"#)
    #expect(file.externs["helper"] == PatchFile.Extern(object: "app", sympos: 2))
    #expect(file.externs["counter"] == PatchFile.Extern(object: nil, sympos: 1))
    let none = try PatchFile.parse(
      Data(#"{"id": "p", "library": "/l.so", "functions": [{"old": "f", "new": "g"}]}"#.utf8), path: "p.json",
      folder: "/")
    #expect(none.externs.isEmpty)
  }

  @Test func externsAreParsedStrictly() {
    #expect(problem("[]")?.contains("'externs' must be an object") == true)
    #expect(problem("{}")?.contains("must not be empty") == true)
    #expect(problem(#"{"h": 1}"#)?.contains("'externs' must be an object") == true)
    #expect(problem(#"{"h": {}}"#)?.contains("must give 'object', 'sympos' or both") == true)
    #expect(problem(#"{"h": {"objet": "app"}}"#)?.contains("unknown key 'externs.h.objet'") == true)
    #expect(problem(#"{"h": {"sympos": 0}}"#)?.contains("'externs.h.sympos' must be an integer") == true)
    #expect(problem(#"{"h": {"sympos": 1.5}}"#) != nil)
    #expect(problem(#"{"h": {"object": ""}}"#)?.contains("must not be empty") == true)
    #expect(problem(#"{"h": {"object": 3}}"#)?.contains("must be a string") == true)
  }

  static let library = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fixtures/build/libextern-exe.so").path

  @Test(
    .enabled(
      if: FileManager.default.fileExists(atPath: library),
      "needs Fixtures/build/libextern-exe.so: run `make fixtures`"
    ))
  func rewrittenEntriesAreHiddenAbsoluteDefinitions() throws {
    let elf = try ElfFile(path: Self.library)
    let undefined = Dictionary(uniqueKeysWithValues: elf.undefinedDynamicSymbols.map { ($0.name, $0) })
    let scale = try #require(undefined["scale"])
    let counter = try #require(undefined["counter"])
    #expect(!scale.isWeak && !counter.isWeak)
    #expect(undefined["__gmon_start__"]?.isWeak == true)
    #expect(elf.exportedNames.contains("compute_ext"))
    #expect(!elf.exportedNames.contains("scale"))

    let edits = AbsoluteBinding.edits(binding: [(scale, 0x5555_1234_5678), (counter, 0x7fff_0000_0010)])
    let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.library)))
    let rewritten = AbsoluteBinding.applying(edits, to: original)
    #expect(rewritten.count == original.count)
    // Only the two entries' st_other, st_shndx and st_value changed.
    let changed = zip(original, rewritten).enumerated().filter { $0.element.0 != $0.element.1 }.map(\.offset)
    for offset in changed {
      #expect(
        [scale, counter].contains { offset >= Int($0.entryOffset) + 5 && offset < Int($0.entryOffset) + 16 })
    }
    for (symbol, address) in [(scale, UInt64(0x5555_1234_5678)), (counter, 0x7fff_0000_0010)] {
      let entry = Array(rewritten[Int(symbol.entryOffset)..<Int(symbol.entryOffset) + 24])
      #expect(entry[4] == original[Int(symbol.entryOffset) + 4], "st_info (binding, type) kept")
      #expect(entry[5] & 3 == 2, "STV_HIDDEN")
      #expect(UInt16(entry[6]) | UInt16(entry[7]) << 8 == 0xfff1, "SHN_ABS")
      let value = entry[8..<16].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
      #expect(value == address)
    }

    // The loader's view of the rewritten file: both are defined now, the rest as before.
    let copy = NSTemporaryDirectory() + "swpatch-abs-\(UUID().uuidString).so"
    defer { unlink(copy) }
    try Data(rewritten).write(to: URL(fileURLWithPath: copy))
    let after = try ElfFile(path: copy).undefinedDynamicSymbols.map(\.name)
    #expect(!after.contains("scale") && !after.contains("counter"))
    #expect(Set(after) == Set(elf.undefinedDynamicSymbols.map(\.name)).subtracting(["scale", "counter"]))
  }
}
