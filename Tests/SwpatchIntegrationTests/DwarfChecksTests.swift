import Foundation
import Glibc
import SwpatchPatcher
import SwpatchProtocol
import SwpatchSymbols
import Testing

/// What DWARF and the machine code let swpatch check before it writes anything:
/// signatures (refused, forced, or noted as unchecked), inlined copies (warned about),
/// stripped binaries whose symbols and DWARF are in a separate debug file, and functions
/// that branch back into the bytes the entry jump overwrites (refused).
@Suite(.serialized, .needsRoot, .needsFixtures) struct DwarfChecksTests {
  /// A patch file replacing `old` by `new` from libchecks.so.
  func patch(_ ws: Workspace, _ id: String, old: String, new: String) -> String {
    ws.write(
      id + ".json",
      #"{"id": "\#(id)", "library": "\#(Paths.fixture("libchecks.so"))", "functions": [{"old": "\#(old)", "new": "\#(new)"}]}"#
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

  func notes(_ result: CLIResult) -> [String] { result.json?["notes"] as? [String] ?? [] }

  /// A debug root with nothing in it: only what sits next to a binary can be found.
  func emptyDebugRoot(_ ws: Workspace) -> String {
    let root = ws.directory + "/no-debug"
    try? FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    return root
  }

  // MARK: Signatures

  @Test func signatureMismatchIsRefusedWithBothPrototypes() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let compute = try address(of: "compute", in: target, workspace: ws)
    try expectRefusedAttach(
      target, ws, patch(ws, "wide", old: "compute", new: "compute_wide"), code: "signature_mismatch",
      mentions: [
        "signature mismatch: int compute(int) vs long int compute_wide(int, int); use --force"
      ], watch: compute)
    // A dry run is refused the same way: the check comes before any plan.
    let dry = ws.swpatch(
      "attach", "\(target.pid)", patch(ws, "wide", old: "compute", new: "compute_wide"), "--dry-run")
    #expect(dry.status == 1 && dry.output.contains("signature mismatch"), "\(dry.output)")
  }

  @Test func signatureMismatchIsPatchedWhenForcedAndTheReportSaysSo() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let result = ws.swpatch(
      "attach", "\(target.pid)", patch(ws, "wide", old: "compute", new: "compute_wide"), "--force", "--json")
    #expect(result.status == 0, "\(result.output)")
    #expect(
      notes(result).contains(
        "signature mismatch forced: int compute(int) vs long int compute_wide(int, int)"),
      "\(result.output)")
    #expect(target.waitForValue("compute", "84", from: target.output.count))
  }

  @Test func forceIsAnOptionThatOldRequestsDecodeWithout() throws {
    let decoder = JSONDecoder()
    #expect(try decoder.decode(OperationOptions.self, from: Data("{}".utf8)).force == false)
    let forced = try decoder.decode(OperationOptions.self, from: Data(#"{"force": true}"#.utf8))
    #expect(forced.force && !forced.dryRun)
    let encoded = String(decoding: try JSONEncoder().encode(OperationOptions(force: true)), as: UTF8.self)
    #expect(encoded.contains(#""force":true"#), "\(encoded)")
  }

  @Test func typedefsAndQualifiersAreNotAMismatch() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    // count_t compute_typedef(const count_t) against int compute(int).
    let result = ws.swpatch(
      "attach", "\(target.pid)", patch(ws, "td", old: "compute", new: "compute_typedef"), "--json")
    #expect(result.status == 0, "\(result.output)")
    #expect(!notes(result).contains { $0.contains("signature") }, "\(result.output)")
    #expect(target.waitForValue("compute", "105", from: target.output.count))
  }

  @Test func missingDWARFIsNotedOncePerFunction() throws {
    let ws = Workspace()
    let target = try Fixture("loop-nodebug", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let info = try symbol("compute", in: target, ws)
    #expect(info["prototype"] == nil, "\(info)")
    let fix = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    let result = ws.swpatch("attach", "\(target.pid)", fix, "--json")
    #expect(result.status == 0, "\(result.output)")
    let unchecked = notes(result).filter { $0.contains("signature not checked") }
    #expect(
      unchecked == ["signature not checked for compute: no DWARF for compute in loop-nodebug"],
      "\(result.output)")
    #expect(target.waitForValue("compute", "63", from: target.output.count))
  }

  // MARK: Inline sites

  /// `file:line` for each call of `name(` on the lines of `source` marked INLINE-SITE.
  func markedSites(of name: String, in source: String) throws -> [String] {
    let text = try String(contentsOfFile: Paths.root + "/Fixtures/" + source, encoding: .utf8)
    var sites: [String] = []
    for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
    where line.contains("// INLINE-SITE") {
      let calls = line.components(separatedBy: " \(name)(").count - 1
      sites += Array(repeating: "\(source):\(index + 1)", count: calls)
    }
    return sites
  }

  @Test func inlinedFunctionIsWarnedAboutWithItsLines() throws {
    let ws = Workspace()
    let expected = try markedSites(of: "twice", in: "inlined.c")
    #expect(expected.count == 3, "\(expected)")
    let target = try Fixture("inlined", ["20"])
    #expect(target.waitForValue("pointer", "21"))
    let info = try symbol("twice", in: target, ws)
    #expect(info["inline_sites"] as? [String] == expected, "\(info)")
    #expect(info["prototype"] as? String == "int twice(int)", "\(info)")
    let text = ws.swpatch("symbols", "\(target.pid)", "twice")
    #expect(text.output.contains("inline_sites=\(expected.joined(separator: ","))"), "\(text.output)")
    let result = ws.swpatch("attach", "\(target.pid)", patch(ws, "tw", old: "twice", new: "twice_v2"))
    #expect(result.status == 0, "\(result.output)")
    #expect(
      result.output.contains(
        "note: twice is inlined at 3 sites (\(expected.joined(separator: ", "))); those calls keep the old code"
      ),
      "\(result.output)")
    // The out-of-line copy is patched; the inlined copies are not.
    #expect(target.waitForValue("pointer", "1010", from: target.output.count))
    #expect(target.output.all.last?.contains(" direct=21 ") == true)
    #expect(target.output.all.last?.contains(" sum=8") == true)
  }

  // MARK: Separate debug files

  @Test func localFunctionOnlyInABuildIDDebugFileIsResolvedCheckedAndPatched() throws {
    let ws = Workspace()
    let target = try Fixture("split", ["20"])
    #expect(target.waitForValue("secret", "21"))
    // Stripped: without its debug file, the static function does not exist.
    ws.environment["SWPATCH_DEBUG_ROOT"] = emptyDebugRoot(ws)
    let without = ws.swpatch("symbols", "\(target.pid)", "secret_scale")
    #expect(without.status == 1 && without.output.contains("not found"), "\(without.output)")
    ws.environment["SWPATCH_DEBUG_ROOT"] = Paths.fixture("debugroot")
    let info = try symbol("secret_scale", in: target, ws)
    #expect(info["binding"] as? String == "local", "\(info)")
    #expect(info["prototype"] as? String == "int secret_scale(int)", "\(info)")
    let debugFile = try #require(info["debug_file"] as? String)
    let id = try #require(info["build_id"] as? String)
    #expect(debugFile.hasSuffix("/.build-id/\(id.prefix(2))/\(id.dropFirst(2)).debug"), "\(debugFile)")
    // Its signature is checked against the debug file's DWARF.
    let secret = try address(of: "secret_scale", in: target, workspace: ws)
    try expectRefusedAttach(
      target, ws, patch(ws, "wide", old: "secret_scale", new: "compute_wide"), code: "signature_mismatch",
      mentions: ["int secret_scale(int) vs long int compute_wide(int, int)"], watch: secret)
    let result = ws.swpatch(
      "attach", "\(target.pid)", patch(ws, "v2", old: "secret_scale", new: "secret_scale_v2"), "--json")
    #expect(result.status == 0, "\(result.output)")
    #expect(!notes(result).contains { $0.contains("signature") }, "\(result.output)")
    #expect(target.waitForValue("secret", "700", from: target.output.count))
  }

  @Test func debugLinkNextToTheBinaryIsFollowed() throws {
    let ws = Workspace()
    ws.environment["SWPATCH_DEBUG_ROOT"] = emptyDebugRoot(ws)
    let target = try Fixture("split-link", ["20"])
    #expect(target.waitForValue("secret", "21"))
    let info = try symbol("secret_scale", in: target, ws)
    // Found next to the binary as the target sees it (through /proc/PID/root).
    let debugFile = try #require(info["debug_file"] as? String)
    #expect(debugFile == "/proc/\(target.pid)/root" + Paths.fixture("split-link.debug"), "\(info)")
    #expect(info["prototype"] as? String == "int secret_scale(int)", "\(info)")
    let result = ws.swpatch(
      "attach", "\(target.pid)", patch(ws, "v2", old: "secret_scale", new: "secret_scale_v2"))
    #expect(result.status == 0, "\(result.output)")
    #expect(target.waitForValue("secret", "700", from: target.output.count))
  }

  // MARK: Branches into the entry

  @Test func branchBackIntoTheEntryBytesIsRefused() throws {
    let ws = Workspace()
    let target = try Fixture("loopback", ["20"])
    #expect(target.waitForValue("looper", "6"))
    let looper = try address(of: "looper", in: target, workspace: ws)
    try expectRefusedAttach(
      target, ws, patch(ws, "lb", old: "looper", new: "looper_v2"), code: "branch_into_entry",
      mentions: ["function 'looper' has a branch", "back to looper+2", "cannot be patched safely"],
      watch: looper)
    #expect(target.output.all.last?.contains("looper=6 ") == true)
  }

  @Test func branchBackToTheEntryItselfIsPatched() throws {
    let ws = Workspace()
    let target = try Fixture("loopback", ["20"])
    #expect(target.waitForValue("countdown", "7"))
    let result = ws.swpatch(
      "attach", "\(target.pid)", patch(ws, "cd", old: "countdown", new: "countdown_v2"), "--json")
    #expect(result.status == 0, "\(result.output)")
    // Assembly has no DWARF: the signature could not be checked, and the report says so.
    #expect(
      notes(result).contains("signature not checked for countdown: no DWARF for countdown in loopback"),
      "\(result.output)")
    #expect(target.waitForValue("countdown", "603", from: target.output.count))
  }
}

/// A function written in assembly has DWARF with no prototype (gas: language
/// "assembler", return type unspecified), as glibc's syscall wrappers (`getpid`) do:
/// there is no signature to compare, so the patch goes in with "signature not checked"
/// rather than a false `signature_mismatch`.
@Suite(.serialized, .needsRoot, .needsFixtures) struct AssemblyFunctionTests {
  @Test func aFunctionWrittenInAssemblyIsPatchedWithItsSignatureNotChecked() throws {
    let ws = Workspace()
    let target = try Fixture("asmfunc", ["20"])
    #expect(target.waitForValue("seven", "7"))
    let patch = ws.patchFile("asm", library: "libasm.so", functions: [("seven", "seven_v2")])
    let result = ws.swpatch("attach", "\(target.pid)", patch, "--json")
    #expect(result.status == 0, "\(result.output)")
    let notes = result.json?["notes"] as? [String]
    #expect(notes?.contains { $0.contains("signature not checked") } == true, "\(result.output)")
    #expect(target.waitForValue("seven", "8", from: target.output.count))
  }
}

/// Prototypes read from libchecks.so's own DWARF: how they print and which compare equal.
@Suite(.needsFixtures) struct PrototypeTests {
  let library: ElfFile
  let dwarf: DwarfInfo

  init() throws {
    library = try ElfFile(path: Paths.fixture("libchecks.so"))
    dwarf = try #require(DwarfInfo(path: library.path))
  }

  func prototype(_ name: String) throws -> Prototype {
    let symbol = try ProcessImage.librarySymbol(name, in: library)
    return try #require(dwarf.function(at: symbol.value)?.prototype, "no DWARF for \(name)")
  }

  func same(_ a: String, _ b: String) throws -> Bool {
    try prototype(a).hasSameSignature(as: prototype(b))
  }

  @Test func prototypesPrintAsC() throws {
    #expect(try "\(prototype("area"))" == "int area(const struct point *, size_t, int (*)(int), ...)")
    #expect(try "\(prototype("reset"))" == "void reset(void)")
    #expect(try "\(prototype("mix"))" == "double mix(union number, enum color, char * const *)")
    #expect(try "\(prototype("compute_typedef"))" == "count_t compute_typedef(const count_t)")
    #expect(try "\(prototype("take_pp"))" == "int take_pp(int **)")
  }

  @Test func typedefsAndQualifiersResolveButShapesMustMatch() throws {
    #expect(try same("area", "area_typedef"))  // point_t const * and unsigned long for size_t
    #expect(try same("compute_typedef", "secret_scale_v2"))
    #expect(try !same("area", "area_fixed"))  // variadic against not
    #expect(try !same("area", "area_char"))  // a callback returning char, not int
    #expect(try !same("take_pp", "take_p"))  // pointer depth
    #expect(try !same("take_a", "take_b"))  // two anonymous structs named by different typedefs
    #expect(try !same("compute_wide", "compute_typedef"))  // return type and arity
  }

  @Test func inlineSitesAreEmptyForAFunctionNeverInlined() throws {
    let symbol = try ProcessImage.librarySymbol("area", in: library)
    #expect(dwarf.function(at: symbol.value)?.inlineSites == [])
    #expect(dwarf.function(at: symbol.value &+ 1) == nil)  // not a function's entry
  }
}

/// SymbolCache parses each object once and keeps a bounded number of them.
@Suite(.needsFixtures) struct SymbolCacheTests {
  @Test func aFileIsParsedOnceAndEvictedWhenTheCacheIsFull() throws {
    let cache = SymbolCache(capacity: 2)
    let fix = try cache.file(at: Paths.fixture("libfix.so"))
    #expect(try cache.file(at: Paths.fixture("libfix.so")) === fix)
    // libfix.so is built with -g: a nil here is a failure, not two equal nils.
    let dwarf = try #require(cache.dwarf(of: fix), "libfix.so has DWARF; the cache lost it")
    #expect(cache.dwarf(of: fix) === dwarf)
    _ = try cache.file(at: Paths.fixture("libp1.so"))
    _ = try cache.file(at: Paths.fixture("libp2.so"))
    #expect(cache.count == 2)
    #expect(try cache.file(at: Paths.fixture("libfix.so")) !== fix)  // evicted, parsed again
  }

  @Test func strippedAndUnstrippedCopiesWithOneBuildIDAreKeptApart() throws {
    let cache = SymbolCache()
    let full = try cache.file(at: Paths.fixture("split-full"))
    let stripped = try cache.file(at: Paths.fixture("split"))
    #expect(full.buildID == stripped.buildID)
    #expect(full !== stripped)
    #expect(full.hasSymtab && !stripped.hasSymtab)
  }
}

/// The debug file search accepts only a file that belongs to the object.
@Suite(.needsFixtures) struct DebugFilesTests {
  @Test func debugLinkCRCIsTheOneObjcopyRecorded() throws {
    let stripped = try ElfFile(path: Paths.fixture("split-link"))
    let link = try #require(stripped.debugLink)
    #expect(link.name == "split-link.debug")
    #expect(DebugFiles.crc32(ofFileAt: Paths.fixture("split-link.debug")) == link.crc)
  }

  @Test func aDebugFileWithAnotherBuildIDIsIgnored() throws {
    let ws = Workspace()
    let loop = try ElfFile(path: Paths.fixture("loop-nodebug"))
    let id = try #require(loop.buildID)
    let folder = ws.directory + "/root/.build-id/\(id.prefix(2))"
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    let wrong = try #require(
      FileManager.default.contentsOfDirectory(atPath: Paths.fixture("debugroot/.build-id")).first)
    let source = Paths.fixture("debugroot/.build-id/\(wrong)")
    let file = try #require(FileManager.default.contentsOfDirectory(atPath: source).first)
    try FileManager.default.copyItem(
      atPath: source + "/" + file, toPath: folder + "/\(id.dropFirst(2)).debug")
    #expect(DebugFiles.find(for: loop, path: loop.path, root: ws.directory + "/root") == nil)
    let split = try ElfFile(path: Paths.fixture("split"))
    #expect(DebugFiles.find(for: split, path: split.path, root: Paths.fixture("debugroot")) != nil)
  }
}
