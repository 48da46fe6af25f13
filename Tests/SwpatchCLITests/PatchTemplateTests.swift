import Foundation
import SwpatchSymbols
import Testing

@testable import swpatch

/// What `swpatch new` writes: a C file that wraps the original through `prev` with the
/// old function's prototype, a Makefile, and a patch file naming both.
@Suite struct PatchTemplateTests {
  static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

  static func template(_ prototype: Prototype, sympos: Int? = nil) -> PatchTemplate {
    PatchTemplate(
      function: prototype.name, prototype: prototype, object: "app", sympos: sympos, source: "/srv/app",
      includeDirectory: root + "/include")
  }

  static let compute = Prototype(
    name: "compute", returns: .base(name: "int", size: 4), parameters: [.base(name: "int", size: 4)],
    variadic: false, parameterNames: ["x"])

  /// `double (*pick(const struct point *p, size_t n, int (*callback)(int), my_len, handle *p))(double)`
  static let pick: Prototype = {
    let double = DwarfType.base(name: "double", size: 8)
    let int = DwarfType.base(name: "int", size: 4)
    let size = DwarfType.typedef("size_t", .base(name: "long unsigned int", size: 8))
    return Prototype(
      name: "pick", returns: .pointer(.function(returns: double, parameters: [double], variadic: false)),
      parameters: [
        .pointer(.qualified("const", .tagged(kind: "struct", name: "point"))), size,
        .pointer(.function(returns: int, parameters: [int], variadic: false)),
        .typedef("my_len", size), .pointer(.typedef("handle", .tagged(kind: "struct", name: ""))),
      ],
      variadic: false, parameterNames: ["p", "n", "callback", "", "p"])
  }()

  @Test func aWrapperCallsPrevWithTheParametersAndNeverTheOldName() {
    let source = Self.template(Self.compute).cSource
    #expect(source.contains("#include <swpatch.h>"))
    #expect(source.contains("SWPATCH_REPLACE(int, compute, int x) {\n"))
    #expect(source.contains("  return compute_prev(x);\n"))
    #expect(!source.contains("compute(x)"))
    #expect(source.contains("original: int compute(int x)"))
  }

  @Test func aVoidFunctionCallsPrevWithoutReturningAValue() {
    let reset = Prototype(name: "reset", returns: .void, parameters: [], variadic: false)
    let source = Self.template(reset).cSource
    #expect(source.contains("SWPATCH_REPLACE(void, reset, void) {\n"))
    #expect(source.contains("  reset_prev();\n"))
  }

  @Test func typesThePrototypeNamesAreDeclaredDependenciesFirst() {
    let lines = Self.pick.cDeclarations
    #expect(
      lines == [
        "#include <stddef.h>", "struct point;", "typedef size_t my_len;", "typedef struct handle handle;",
      ])
    #expect(
      Self.pick.sourceDeclaration
        == "double (*pick(const struct point *p, size_t n, int (*callback)(int), my_len a4, handle *a5))(double)"
    )
    // A struct by value cannot be declared incomplete: the author is told to paste it.
    let byValue = Prototype(
      name: "area", returns: .base(name: "int", size: 4), parameters: [.tagged(kind: "struct", name: "rect")],
      variadic: false)
    #expect(byValue.cDeclarations.first?.hasPrefix("struct rect; /* used by value") == true)
  }

  /// The generated C compiles against include/swpatch.h as the Makefile builds it, and
  /// defines the replacement and an 8-byte prev cell by the names the patch file gives.
  @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/cc"), "needs cc"))
  func theGeneratedFilesBuildAPatchLibrary() throws {
    let folder = NSTemporaryDirectory() + "swpatch-new-" + UUID().uuidString
    defer { try? FileManager.default.removeItem(atPath: folder) }
    for prototype in [Self.compute, Self.pick] {
      let template = Self.template(prototype)
      let paths = try template.write(into: folder, force: true)
      #expect(
        paths.map { ($0 as NSString).lastPathComponent } == [
          "\(prototype.name)-fix.c", "Makefile", "\(prototype.name)-fix.json",
        ])
      let make = Process()
      make.executableURL = URL(fileURLWithPath: "/usr/bin/make")
      make.arguments = ["-s", "-C", folder]
      try make.run()
      make.waitUntilExit()
      #expect(make.terminationStatus == 0, "make failed for \(prototype.sourceDeclaration)")
      let elf = try ElfFile(path: folder + "/lib\(prototype.name)-fix.so")
      #expect(elf.symbols(named: "\(prototype.name)_fix").first?.kind == .function)
      #expect(elf.symbols(named: "\(prototype.name)_prev").first?.size == 8)
      let json = try #require(
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: paths[2])))
          as? [String: Any])
      #expect(json["library"] as? String == "lib\(prototype.name)-fix.so")
      let entry = try #require((json["functions"] as? [[String: Any]])?.first)
      #expect(
        entry["old"] as? String == prototype.name && entry["prev"] as? String == "\(prototype.name)_prev")
      #expect(entry["new"] as? String == "\(prototype.name)_fix" && entry["object"] as? String == "app")
    }
  }

  @Test func existingFilesAreKeptUnlessForced() throws {
    let folder = NSTemporaryDirectory() + "swpatch-new-" + UUID().uuidString
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let template = Self.template(Self.compute)
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    _ = FileManager.default.createFile(atPath: folder + "/Makefile", contents: Data("mine\n".utf8))
    #expect(throws: NewPatchError.self) { try template.write(into: folder, force: false) }
    #expect(!FileManager.default.fileExists(atPath: folder + "/compute-fix.c"))
    #expect(try String(contentsOfFile: folder + "/Makefile", encoding: .utf8) == "mine\n")
    _ = try template.write(into: folder, force: true)
    #expect(try String(contentsOfFile: folder + "/Makefile", encoding: .utf8) == template.makefile)
  }

  @Test func theVerbsErrorCodesAreDocumented() throws {
    let text = try String(contentsOfFile: Self.root + "/docs/cli.md", encoding: .utf8)
    for error in [NewPatchError.exists(["/x"]), .cannotWrite(path: "/x", reason: "")] {
      #expect(text.contains("| `\(error.code)` |"), "\(error.code) is not in docs/cli.md")
    }
  }
}
