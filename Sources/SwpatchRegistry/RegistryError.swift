import SwpatchBase

/// A hook that keeps a patch from being disabled under policy `stack`.
public struct StackBlocker: Equatable, Sendable, Codable {
  public var function: String
  public var oldAddr: UInt64
  /// Top first: the order in which they would have to be disabled.
  public var patchesAbove: [String]

  public init(function: String, oldAddr: UInt64, patchesAbove: [String]) {
    self.function = function
    self.oldAddr = oldAddr
    self.patchesAbove = patchesAbove
  }
}

/// Why the registry refused an operation; nothing was changed when one is thrown.
public enum RegistryError: CodedError, Equatable, Sendable {
  case alreadyApplied(id: String, pid: Int32, state: PatchState)
  /// An attach of an id the target knows, with a library whose content differs from the
  /// one stored for it (`stored` and `new` are SHA-256s).
  case libraryChanged(id: String, pid: Int32, stored: String, new: String)
  /// `attach --upgrade` with a build that differs from the stored patch in more than its
  /// library (its functions, `requires` or `replace`).
  case upgradeMismatch(id: String, reason: String)
  /// `remove` of a patch that is still enabled.
  case patchEnabled(id: String, pid: Int32)
  /// `remove` of a patch that other patches (enabled or not) require.
  case stillRequired(id: String, dependants: [String])
  case policyMismatch(pid: Int32, existing: DisablePolicy, requested: DisablePolicy)
  case unknownPatch(id: String, pid: Int32, known: [String])
  case alreadyEnabled(id: String, pid: Int32)
  case alreadyDisabled(id: String, pid: Int32)
  case blockedByStack(id: String, blockers: [StackBlocker])
  /// `dependants` are the enabled patches that require `id`.
  case requiredBy(id: String, dependants: [String])
  case missingRequirement(id: String, pid: Int32, missing: [String])
  case invalidPatch(id: String, reason: String)
  case stalePlan(pid: Int32, planned: UInt64, current: UInt64)
  case wrongTarget(planned: TargetID, actual: TargetID)
  /// The installs handed to commit do not match the plan's installHook effects.
  case installMismatch(missing: [UInt64], unexpected: [UInt64])

  /// Stable identifier for scripts and JSON output; messages may be reworded, codes may not.
  public var code: String {
    switch self {
    case .alreadyApplied: "already_applied"
    case .libraryChanged: "library_changed"
    case .patchEnabled: "patch_enabled"
    case .upgradeMismatch: "upgrade_mismatch"
    case .stillRequired: "still_required"
    case .policyMismatch: "policy_mismatch"
    case .unknownPatch: "unknown_patch"
    case .alreadyEnabled: "already_enabled"
    case .alreadyDisabled: "already_disabled"
    case .blockedByStack: "blocked_by_stack"
    case .requiredBy: "required_by"
    case .missingRequirement: "missing_requirement"
    case .invalidPatch: "invalid_patch"
    case .stalePlan: "stale_plan"
    case .wrongTarget: "wrong_target"
    case .installMismatch: "install_mismatch"
    }
  }

  public var description: String {
    switch self {
    case .alreadyApplied(let id, let pid, let state):
      return
        "patch '\(id)' is already applied to pid \(pid) (\(state.rawValue)); use `swpatch enable`/`disable`"
    case .libraryChanged(let id, let pid, let stored, let new):
      return "patch '\(id)' on pid \(pid) was attached from a library with SHA-256 \(stored);"
        + " the library given now has SHA-256 \(new). Nothing was changed. To run the new build,"
        + " `swpatch attach --upgrade` puts it in place of the old one, or attach it under a new id"
        + " (`swpatch enable` would bring back the stored copy, not the new build)"
    case .upgradeMismatch(let id, let reason):
      return "cannot upgrade '\(id)': \(reason); an upgrade replaces only the library. Attach the"
        + " new build under a new id (or disable, remove and attach it again)"
    case .patchEnabled(let id, let pid):
      return "cannot remove '\(id)' from pid \(pid): it is enabled; `swpatch disable \(pid) \(id)` first"
    case .stillRequired(let id, let dependants):
      let verb = dependants.count == 1 ? "requires" : "require"
      return "cannot remove '\(id)': \(dependants.joined(separator: ", ")) \(verb) it (enabling"
        + " \(dependants.count == 1 ? "it" : "them") again needs it); remove \(dependants.joined(separator: ", ")) first"
    case .policyMismatch(let pid, let existing, let requested):
      return "target \(pid) uses policy '\(existing.rawValue)'; it cannot change while patches are applied"
        + " (requested '\(requested.rawValue)'; omit the policy or pass '\(existing.rawValue)')"
    case .unknownPatch(let id, let pid, let known):
      let list = known.isEmpty ? "none are applied" : "known: " + known.joined(separator: ", ")
      return "no patch '\(id)' on pid \(pid) (\(list)); check the id with `swpatch status`"
    case .alreadyEnabled(let id, let pid):
      return "patch '\(id)' is already enabled on pid \(pid); nothing to do"
    case .alreadyDisabled(let id, let pid):
      return "patch '\(id)' is already disabled on pid \(pid); nothing to do"
    case .blockedByStack(let id, let blockers):
      let parts = blockers.map { "\($0.function) has \($0.patchesAbove.joined(separator: ", ")) above it" }
      return "cannot disable '\(id)' under policy 'stack': \(parts.joined(separator: " and "));"
        + " disable \(Self.unwindOrder(blockers).joined(separator: ", ")) first (or use policy 'any')"
    case .requiredBy(let id, let dependants):
      let verb = dependants.count == 1 ? "requires" : "require"
      return "cannot disable '\(id)': enabled \(dependants.joined(separator: ", ")) \(verb) it;"
        + " disable \(dependants.joined(separator: ", ")) first"
    case .missingRequirement(let id, let pid, let missing):
      let (verb, pronoun) = missing.count == 1 ? ("is", "it") : ("are", "them")
      return "cannot enable '\(id)' on pid \(pid): it requires \(missing.joined(separator: ", ")),"
        + " which \(verb) not enabled; attach or enable \(pronoun) first"
    case .invalidPatch(let id, let reason):
      return "invalid patch '\(id)': \(reason)"
    case .stalePlan(let pid, let planned, let current):
      return
        "plan for pid \(pid) is stale (made at generation \(planned), state is now at \(current)); plan again"
    case .wrongTarget(let planned, let actual):
      return "plan was made for pid \(planned.pid) (start \(planned.startTime)) but committed to pid"
        + " \(actual.pid) (start \(actual.startTime)); plan again against the right target"
    case .installMismatch(let missing, let unexpected):
      var parts: [String] = []
      if !missing.isEmpty { parts.append("missing " + missing.map(hexAddress).joined(separator: ", ")) }
      if !unexpected.isEmpty {
        parts.append("unexpected " + unexpected.map(hexAddress).joined(separator: ", "))
      }
      return
        "commit needs exactly one hook install per installHook effect (\(parts.joined(separator: "; ")));"
        + " report the installs the plan asked for"
    }
  }

  /// Merges the per-hook "above" lists (each top first) into one order that unwinds every stack:
  /// a patch is named only after every patch that sits above it somewhere.
  static func unwindOrder(_ blockers: [StackBlocker]) -> [String] {
    var remaining: [String] = []
    for name in blockers.flatMap(\.patchesAbove) where !remaining.contains(name) { remaining.append(name) }
    var order: [String] = []
    while !remaining.isEmpty {
      let free = remaining.firstIndex { name in
        !blockers.contains { blocker in
          guard let at = blocker.patchesAbove.firstIndex(of: name) else { return false }
          return blocker.patchesAbove[..<at].contains { remaining.contains($0) }
        }
      }
      // A cycle cannot arise from real stacks; fall back to encounter order rather than loop.
      order.append(remaining.remove(at: free ?? 0))
    }
    return order
  }
}
