import Foundation
import Glibc
import Testing

/// The life cycle an operator iterates through: a rebuilt library under a known id,
/// and taking patches out for good (`remove`).
@Suite(.serialized, .needsRoot, .needsFixtures) struct LifecycleTests {
  /// Lowercase hex SHA-256 of a file, as Debian's coreutils print it.
  func sha256(_ path: String) -> String {
    let pipe = Pipe()
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
    process.arguments = [path]
    process.standardOutput = pipe
    try? process.run()
    process.waitUntilExit()
    let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    return String(text.prefix { $0 != " " })
  }

  /// The mappings of patch libraries (our memfds) in `pid`, and its descriptors on them.
  func ourMemfds(_ pid: pid_t) -> (mappings: [String], descriptors: [String]) {
    let maps = (try? String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)) ?? ""
    let mappings = maps.split(separator: "\n").map(String.init).filter { $0.contains("/memfd:swpatch-") }
    let folder = "/proc/\(pid)/fd"
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
    let descriptors = fds.compactMap { fd in
      (try? FileManager.default.destinationOfSymbolicLink(atPath: "\(folder)/\(fd)")).map { "\(fd) -> \($0)" }
    }.filter { $0.contains("memfd:swpatch-") }
    return (mappings, descriptors)
  }

  func errorCode(_ result: CLIResult) -> String? {
    (result.json?["error"] as? [String: Any])?["code"] as? String
  }

  @Test func reattachingARebuiltLibraryUnderTheSameIdIsRefusedAsLibraryChanged() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    defer { target.stop() }
    #expect(target.waitForValue("compute", "42"))
    // The operator's library path, rebuilt in place between the two attaches.
    let library = ws.directory + "/libfix-build.so"
    try FileManager.default.copyItem(atPath: Paths.fixture("libsameid-a.so"), toPath: library)
    let patch = ws.write(
      "fix.json",
      #"{"id": "fix", "library": "\#(library)", "functions": [{"old": "compute", "new": "compute_sameid"}]}"#)
    let first = ws.swpatch("attach", "\(target.pid)", patch)
    #expect(first.status == 0, "\(first.output)")
    #expect(target.waitForValue("compute", "147", from: target.output.count))
    let oldHash = sha256(library)
    try FileManager.default.removeItem(atPath: library)
    try FileManager.default.copyItem(atPath: Paths.fixture("libsameid-b.so"), toPath: library)
    let newHash = sha256(library)
    #expect(oldHash != newHash)
    let registryBefore = try String(contentsOfFile: ws.stateDir + "/registry.json", encoding: .utf8)
    let mapsBefore = ourMemfds(target.pid)

    let refused = ws.swpatch("attach", "\(target.pid)", patch, "--json")
    #expect(refused.status == 1)
    #expect(errorCode(refused) == "library_changed", "\(refused.output)")
    let message = (refused.json?["error"] as? [String: Any])?["message"] as? String ?? ""
    #expect(message.contains(oldHash) && message.contains(newHash), "\(message)")
    #expect(message.contains("--upgrade") && message.contains("new id"), "\(message)")
    // Nothing changed: registry, mappings, behaviour; the store keeps only the old copy.
    #expect(try String(contentsOfFile: ws.stateDir + "/registry.json", encoding: .utf8) == registryBefore)
    #expect(ourMemfds(target.pid) == mapsBefore)
    #expect(target.waitForValue("compute", "147", from: target.output.count))
    let stored = try FileManager.default.contentsOfDirectory(atPath: ws.stateDir + "/libraries")
    #expect(stored == ["\(oldHash).so"])

    // Enabling the disabled patch says the file changed, and runs the stored copy.
    #expect(ws.swpatch("disable", "\(target.pid)", "fix").status == 0)
    let enabled = ws.swpatch("enable", "\(target.pid)", "fix", "--json")
    #expect(enabled.status == 0, "\(enabled.output)")
    let notes = (enabled.json?["notes"] as? [String]) ?? []
    #expect(
      notes.contains { $0.contains("has changed") && $0.contains(oldHash) && $0.contains(newHash) },
      "\(enabled.output)")
    #expect(target.waitForValue("compute", "147", from: target.output.count))
  }

  @Test func statusShowsWhereEachPatchCameFromAndWhetherItsFileStillHoldsIt() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    defer { target.stop() }
    #expect(target.waitForValue("compute", "42"))
    let library = ws.directory + "/libfix-build.so"
    try FileManager.default.copyItem(atPath: Paths.fixture("libsameid-a.so"), toPath: library)
    let patch = ws.write(
      "fix.json",
      #"{"id": "fix", "library": "\#(library)", "functions": [{"old": "compute", "new": "compute_sameid"}]}"#)
    #expect(ws.swpatch("attach", "\(target.pid)", patch).status == 0)
    let loaded = sha256(library)

    func origin() throws -> [String: Any] {
      let json = try #require(ws.swpatch("status", "\(target.pid)", "--json").json)
      let targets = try #require(json["targets"] as? [[String: Any]])
      let patches = try #require(targets.first?["patches"] as? [[String: Any]])
      return try #require(patches.first?["origin"] as? [String: Any], "\(json)")
    }
    let first = try origin()
    #expect(first["path"] as? String == library)
    #expect(first["sha256"] as? String == loaded)
    #expect(first["on_disk"] as? String == "same")
    #expect(first["patch_file"] as? String == patch)
    let text = ws.swpatch("status", "\(target.pid)").output
    #expect(text.contains("fix  \(library)  sha256=\(loaded)  on disk: same  from \(patch)"), "\(text)")

    // Rebuilt in place: the loaded content is still the old one.
    try FileManager.default.removeItem(atPath: library)
    try FileManager.default.copyItem(atPath: Paths.fixture("libsameid-b.so"), toPath: library)
    let changed = try origin()
    #expect(changed["on_disk"] as? String == "changed")
    #expect(changed["sha256"] as? String == loaded)
    #expect(ws.swpatch("status", "\(target.pid)").output.contains("on disk: changed"))

    try FileManager.default.removeItem(atPath: library)
    #expect(try origin()["on_disk"] as? String == "missing")
  }

  @Test func removingFourPatchesInTurnLeavesNoLibraryAndNoMemfd() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    defer { target.stop() }
    #expect(target.waitForValue("foo", "100"))
    let patches = [
      ("p1", "libp1.so", "foo", "foo_p1", "101"), ("p2", "libp2.so", "foo", "foo_p2", "102"),
      ("p3", "libp3.so", "foo", "foo_p3", "103"), ("fix", "libfix.so", "compute", "compute_v2", "63"),
    ]
    for (id, library, old, new, value) in patches {
      let patch = ws.patchFile(id, library: library, functions: [(old, new)])
      let attach = ws.swpatch("attach", "\(target.pid)", patch)
      #expect(attach.status == 0, "\(attach.output)")
      #expect(target.waitForValue(old, value, from: target.output.count))
      #expect(ourMemfds(target.pid).descriptors.count == 1)
      #expect(ws.swpatch("disable", "\(target.pid)", id).status == 0)
      let removed = ws.swpatch("remove", "\(target.pid)", id, "--json")
      #expect(removed.status == 0, "\(removed.output)")
      #expect(removed.json?["operation"] as? String == "remove")
      let plan = (removed.json?["plan"] as? [String]) ?? []
      #expect(plan.contains { $0.hasPrefix("unload") }, "\(removed.output)")
      #expect(ourMemfds(target.pid).mappings.isEmpty, "\(ourMemfds(target.pid))")
      #expect(ourMemfds(target.pid).descriptors.isEmpty, "\(ourMemfds(target.pid))")
      #expect(target.keepsRunning())
    }
    let last = ourMemfds(target.pid)
    #expect(last.mappings.isEmpty && last.descriptors.isEmpty, "\(last)")
    #expect(target.waitForValue("foo", "100", from: target.output.count))
    #expect(target.waitForValue("compute", "42", from: target.output.count))
    // Gone from the registry, and from the library store; the audit log has each.
    let json = try #require(ws.swpatch("status", "\(target.pid)", "--json").json)
    let entry = (json["targets"] as? [[String: Any]])?.first
    #expect((entry?["patches"] as? [[String: Any]] ?? [["id": "?"]]).isEmpty, "\(json)")
    let stored = (try? FileManager.default.contentsOfDirectory(atPath: ws.stateDir + "/libraries")) ?? []
    #expect(stored.isEmpty, "\(stored)")
    let log = ws.swpatch("log", "--json").output
    #expect(log.components(separatedBy: "\"remove\"").count - 1 == 4, "\(log)")
  }

  @Test func removeRefusesEnabledUnknownAndRequiredPatches() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    defer { target.stop() }
    #expect(target.waitForValue("foo", "100"))
    let p1 = ws.patchFile("p1", library: "libp1.so", functions: [("foo", "foo_p1")])
    let p2 = ws.patchFile(
      "p2", library: "libp2.so", functions: [("bar", "bar_p2")], extra: #", "requires": ["p1"]"#)
    #expect(ws.swpatch("attach", "\(target.pid)", p1, "--policy", "any").status == 0)
    #expect(ws.swpatch("attach", "\(target.pid)", p2).status == 0)
    let registry = try String(contentsOfFile: ws.stateDir + "/registry.json", encoding: .utf8)

    let enabled = ws.swpatch("remove", "\(target.pid)", "p2", "--json")
    #expect(errorCode(enabled) == "patch_enabled", "\(enabled.output)")
    let unknown = ws.swpatch("remove", "\(target.pid)", "nope", "--json")
    #expect(errorCode(unknown) == "unknown_patch", "\(unknown.output)")
    #expect(ws.swpatch("disable", "\(target.pid)", "p2").status == 0)
    #expect(ws.swpatch("disable", "\(target.pid)", "p1").status == 0)
    // p2 is disabled, but enabling it again needs p1.
    let required = ws.swpatch("remove", "\(target.pid)", "p1", "--json")
    #expect(errorCode(required) == "still_required", "\(required.output)")
    let message = (required.json?["error"] as? [String: Any])?["message"] as? String ?? ""
    #expect(message.contains("p2"), "\(message)")
    #expect(ourMemfds(target.pid).mappings.count >= 2)
    _ = registry
    // In dependency order both go.
    #expect(ws.swpatch("remove", "\(target.pid)", "p2").status == 0)
    #expect(ws.swpatch("remove", "\(target.pid)", "p1").status == 0)
    #expect(ourMemfds(target.pid).mappings.isEmpty)
    #expect(target.keepsRunning())
  }

  @Test func removeWaitsForAThreadParkedInTheLibraryAndNamesIt() throws {
    let ws = Workspace()
    let target = try ParkedFixture(ws)
    #expect(target.fixture.waitForValue("answer", "1"))
    let attach = ws.swpatch("attach", "\(target.pid)", answerPatch(ws))
    #expect(attach.status == 0, "\(attach.output)")
    #expect(target.fixture.waitForValue("answer", "2", from: target.fixture.output.count))
    let parked = try target.park()
    #expect(parked.version == 2)
    // Disabled at once: the parked thread stays inside answer_v2, in the library.
    let disable = ws.swpatch("disable", "\(target.pid)", "v2", "--consistency", "entry")
    #expect(disable.status == 0, "\(disable.output)")
    #expect(target.fixture.waitForValue("answer", "1", from: target.fixture.output.count))

    let refused = ws.swpatch("remove", "\(target.pid)", "v2", "--retry-for", "300ms", "--json")
    #expect(refused.status == 1)
    #expect(errorCode(refused) == "stack_check_timeout", "\(refused.output)")
    let message = (refused.json?["error"] as? [String: Any])?["message"] as? String ?? ""
    #expect(message.contains("thread \(parked.tid)") && message.contains("answer_v2"), "\(message)")
    #expect(message.contains("frame #"), "\(message)")
    #expect(!ourMemfds(target.pid).mappings.isEmpty)
    #expect(ws.swpatch("status", "\(target.pid)").output.contains("v2"))

    target.release()
    #expect(target.fixture.output.wait { $0 == "left version=2 tid=\(parked.tid)" } != nil)
    let removed = ws.swpatch("remove", "\(target.pid)", "v2", "--retry-for", "10s")
    #expect(removed.status == 0, "\(removed.output)")
    let after = ourMemfds(target.pid)
    #expect(after.mappings.isEmpty && after.descriptors.isEmpty, "\(after)")
    #expect(target.fixture.keepsRunning())
    // The thread can park again (in the original now) and the process lives on.
    let again = try target.park()
    #expect(again.version == 1)
    target.release()
  }
}

/// `attach --upgrade`: a new build of a known patch takes the old one's place in its
/// stack position, in one stop, with the `prev` cells around it re-linked.
@Suite(.serialized, .needsRoot, .needsFixtures) struct UpgradeTests {
  /// The wrapper patch `w<n>` (libprevN's compute_wrapN = prev(x) + 10^(N-1)); `build`
  /// names another library file of the same id.
  func wrapper(_ ws: Workspace, _ n: String, build: String? = nil) -> String {
    let library = Paths.fixture(build ?? "libprev\(n).so")
    let text = #"""
      {"id": "w\#(n)", "library": "\#(library)",
       "functions": [{"old": "compute", "new": "compute_wrap\#(n)", "prev": "compute_prev\#(n)"}]}
      """#
    return ws.write("w\(n)-\(build ?? "a").json", text)
  }

  @Test(arguments: ["stack", "any"])
  func upgradeReplacesTheMiddleOfAThreePatchStack(policy: String) throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["5"])
    defer { target.stop() }
    #expect(target.waitForValue("compute", "42"))
    for (n, expected) in [("1", "43"), ("2", "53"), ("3", "153")] {
      let result = ws.swpatch("attach", "\(target.pid)", wrapper(ws, n), "--policy", policy)
      #expect(result.status == 0, "\(result.output)")
      #expect(target.waitForValue("compute", expected, from: target.output.count), "after w\(n)")
    }
    // Without --upgrade, a rebuilt w2 is refused.
    let refused = ws.swpatch("attach", "\(target.pid)", wrapper(ws, "2", build: "libprev2b.so"), "--json")
    #expect((refused.json?["error"] as? [String: Any])?["code"] as? String == "library_changed")

    let mark = target.output.count
    let upgrade = ws.swpatch(
      "attach", "\(target.pid)", wrapper(ws, "2", build: "libprev2b.so"), "--upgrade", "--json")
    #expect(upgrade.status == 0, "\(upgrade.output)")
    #expect(upgrade.json?["operation"] as? String == "upgrade", "\(upgrade.output)")
    // compute = 42 + 1 (w1) + 20 (new w2) + 100 (w3): the new build sits in the middle.
    #expect(target.waitForValue("compute", "163", from: mark))
    #expect(target.keepsRunning(lines: 20))
    // Never the version below (143: w2 skipped) nor a mix: old build, then new build.
    let values = target.output.all[mark...].compactMap { line in
      line.split(separator: " ").first { $0.hasPrefix("compute=") }.map { String($0.dropFirst(8)) }
    }
    let first163 = try #require(values.firstIndex(of: "163"))
    #expect(values[..<first163].allSatisfy { $0 == "153" }, "\(values)")
    #expect(values[first163...].allSatisfy { $0 == "163" }, "\(values)")
    // The stack keeps its order, with w2's entry now the new build's.
    let status = try #require(ws.swpatch("status", "--json").json?["targets"] as? [[String: Any]])
    let stack = try #require(
      (status.first?["hooks"] as? [[String: Any]])?.first?["stack"] as? [[String: Any]])
    #expect(stack.compactMap { $0["patch"] as? String } == ["w3", "w2", "w1"])
    // Disabling w3 then leaves the new w2 on top: 42 + 1 + 20.
    #expect(ws.swpatch("disable", "\(target.pid)", "w3").status == 0)
    #expect(target.waitForValue("compute", "63", from: target.output.count))
  }

  @Test func upgradeWithAnotherFunctionListIsRefused() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    defer { target.stop() }
    #expect(target.waitForValue("foo", "100"))
    let p1 = ws.patchFile("p", library: "libp1.so", functions: [("foo", "foo_p1")])
    #expect(ws.swpatch("attach", "\(target.pid)", p1).status == 0)
    let other = ws.patchFile("p", library: "libp2.so", functions: [("bar", "bar_p2")])
    let refused = ws.swpatch("attach", "\(target.pid)", other, "--upgrade", "--json")
    #expect(
      (refused.json?["error"] as? [String: Any])?["code"] as? String == "upgrade_mismatch",
      "\(refused.output)")
    #expect(target.waitForValue("foo", "101", from: target.output.count))
    #expect(target.waitForValue("bar", "200", from: target.output.count))
  }
}
