import Foundation
import Testing

/// The symbol cache is keyed by the file and its content, never by build id alone.
@Suite(.serialized, .needsRoot, .needsFixtures) struct SymbolCacheKeyTests {
  /// Two libraries linked with one `--build-id` and of one size, with their functions in
  /// swapped order: the second attach must run the second library's `compute_sameid`
  /// (x*9), not whatever sits at the first library's offset (`other_sameid`, x*8).
  @Test func twoLibrariesWithOneBuildIDAreNotConfused() throws {
    let a = Paths.fixture("libsameid-a.so")
    let b = Paths.fixture("libsameid-b.so")
    let sizeA = try #require(FileManager.default.attributesOfItem(atPath: a)[.size] as? Int)
    let sizeB = try #require(FileManager.default.attributesOfItem(atPath: b)[.size] as? Int)
    try #require(sizeA == sizeB, "the fixtures must have one size for this test to mean anything")
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let first = ws.patchFile(
      "sameid-a", library: "libsameid-a.so", functions: [("compute", "compute_sameid")])
    #expect(ws.swpatch("attach", "\(target.pid)", first).status == 0)
    #expect(target.waitForValue("compute", "147", from: target.output.count))
    #expect(ws.swpatch("disable", "\(target.pid)", "sameid-a").status == 0)
    let second = ws.patchFile(
      "sameid-b", library: "libsameid-b.so", functions: [("compute", "compute_sameid")])
    let result = ws.swpatch("attach", "\(target.pid)", second)
    #expect(result.status == 0, "\(result.output)")
    #expect(
      target.waitForValue("compute", "189", from: target.output.count), "\(target.output.all.suffix(3))")
  }
}
