import Foundation
import Testing

@testable import SwpatchRegistry

/// A registry written by an earlier swpatch is read by this one unchanged: the state
/// directory of a running system survives an upgrade of the daemon.
@Suite struct CompatibilityTests {
  /// Fixtures/compat/registry-de79d60.json: written by main at de79d60 (before exec
  /// identity and adoption existed) for a loop fixture with p1 and p2 stacked on foo
  /// under `any`, and fix-compute attached then disabled.
  static let written = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/compat/registry-de79d60.json")

  @Test func aRegistryWrittenBeforeExecIdentityIsReadAsItWas() throws {
    let data = try Data(contentsOf: Self.written)
    let registry = try JSONDecoder().decode(RegistryState.self, from: data)
    let target = try #require(registry.targets.first)
    #expect(registry.targets.count == 1)
    #expect(target.policy == .any)
    #expect(target.generation == 4)
    #expect(target.execID == nil)
    #expect(target.inheritedFrom == nil)
    #expect(target.patches.map(\.id) == ["p1", "p2", "fix-compute"])
    #expect(target.patches.map(\.state) == [.enabled, .enabled, .disabled])
    #expect(target.patch("p2")?.requires == ["p1"])
    let stacks = target.sortedHooks.map { hook in (hook.site.name, hook.topFirst.map(\.patch)) }
    #expect(stacks.map(\.0) == ["foo", "bar"])
    #expect(stacks.map(\.1) == [["p2", "p1"], ["p1"]])
    #expect(target.sortedHooks.allSatisfy { $0.install.jumpBytes.first == 0xe9 })
    // Written back and read again: the same state, and still no keys it did not have.
    let encoded = try JSONEncoder().encode(registry)
    #expect(try JSONDecoder().decode(RegistryState.self, from: encoded) == registry)
    let text = String(decoding: encoded, as: UTF8.self)
    #expect(!text.contains("exec_id") && !text.contains("inherited_from") && !text.contains("patch_file"))
    #expect(target.patches.allSatisfy { $0.patchFile == nil })
    // Its status still shows each patch's library and SHA-256 as its origin, with no
    // patch file (none was recorded then).
    let origins = StatusReport(registry).targets.first?.patches.compactMap(\.origin) ?? []
    #expect(origins.count == 3)
    #expect(origins.map(\.path) == target.patches.map(\.library))
    #expect(origins.map(\.sha256) == target.patches.map(\.sha256))
    #expect(origins.allSatisfy { $0.patchFile == nil && $0.onDisk == nil })
    // A plan on it works as on a registry written today.
    let plan = try target.planDisable("p2")
    #expect(!plan.effects.isEmpty)
  }
}
