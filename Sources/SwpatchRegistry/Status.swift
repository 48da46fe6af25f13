import SwpatchBase

/// What `swpatch status` shows; its JSON keys are a contract for scripts.
public struct StatusReport: Equatable, Sendable, Codable {
  public var targets: [TargetStatus]

  public init(targets: [TargetState]) {
    self.targets = targets.map(TargetStatus.init)
  }

  public init(_ registry: RegistryState) {
    self.init(targets: registry.targets)
  }

  /// Marks the hooks whose memory check failed: `drift[pid][oldAddr]` says how.
  public mutating func mark(drift: [Int32: [UInt64: String]]) {
    for t in targets.indices {
      guard let found = drift[targets[t].pid] else { continue }
      for h in targets[t].hooks.indices {
        targets[t].hooks[h].drift = found[targets[t].hooks[h].oldAddr]
      }
    }
  }
}

/// One target in the status report.
public struct TargetStatus: Equatable, Sendable, Codable {
  public var pid: Int32
  public var startTime: UInt64
  public var executable: String
  public var policy: DisablePolicy
  /// By original address.
  public var hooks: [HookStatus]
  /// In order of first attach.
  public var patches: [PatchStatus]
  /// The patched parent this process inherited its hooks from through `fork`.
  public var inheritedFrom: Int32?

  public init(_ target: TargetState) {
    pid = target.id.pid
    startTime = target.id.startTime
    executable = target.executable
    policy = target.policy
    hooks = target.sortedHooks.map(HookStatus.init)
    patches = target.patches.map(PatchStatus.init)
    inheritedFrom = target.inheritedFrom
  }

  enum CodingKeys: String, CodingKey {
    case pid, executable, policy, hooks, patches
    case startTime = "start_time"
    case inheritedFrom = "inherited_from"
  }
}

/// One hooked function in the status report.
public struct HookStatus: Equatable, Sendable, Codable {
  public var function: String
  public var object: String
  public var oldAddr: UInt64
  public var slot: UInt64
  /// Active first, always ending with `.original`.
  public var stack: [StackItem]
  /// Set when the target's memory does not hold what the registry says (the entry jump
  /// or the slot pointer): something else changed it. Reported, never "fixed".
  public var drift: String?

  public init(_ hook: Hook) {
    function = hook.site.name
    object = hook.site.object
    oldAddr = hook.site.oldAddr
    slot = hook.install.slotAddr
    stack = hook.topFirst.map(StackItem.replacement) + [.original]
  }

  enum CodingKeys: String, CodingKey {
    case function, object, slot, stack, drift
    case oldAddr = "old_addr"
  }

  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    function = try c.decode(String.self, forKey: .function)
    object = try c.decode(String.self, forKey: .object)
    oldAddr = try c.decodeHex(forKey: .oldAddr)
    slot = try c.decodeHex(forKey: .slot)
    stack = try c.decode([StackItem].self, forKey: .stack)
    drift = try c.decodeIfPresent(String.self, forKey: .drift)
  }

  public func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(function, forKey: .function)
    try c.encode(object, forKey: .object)
    try c.encodeHex(oldAddr, forKey: .oldAddr)
    try c.encodeHex(slot, forKey: .slot)
    try c.encode(stack, forKey: .stack)
    try c.encodeIfPresent(drift, forKey: .drift)
  }
}

/// A level of a func stack as shown to users: a replacement, or the original at the bottom.
public enum StackItem: Equatable, Sendable, Codable {
  case replacement(StackEntry)
  case original

  enum CodingKeys: String, CodingKey { case original }

  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    if try c.decodeIfPresent(Bool.self, forKey: .original) == true {
      self = .original
    } else {
      self = .replacement(try StackEntry(from: decoder))
    }
  }

  public func encode(to encoder: any Encoder) throws {
    switch self {
    case .replacement(let entry):
      try entry.encode(to: encoder)
    case .original:
      var c = encoder.container(keyedBy: CodingKeys.self)
      try c.encode(true, forKey: .original)
    }
  }
}

/// One patch in the status report.
public struct PatchStatus: Equatable, Sendable, Codable {
  public var id: String
  public var state: PatchState
  public var library: String
  public var replace: Bool
  public var requires: [String]
  /// SHA-256 of the library content loaded into the target.
  public var sha256: String?

  public init(_ patch: Patch) {
    sha256 = patch.sha256
    id = patch.id
    state = patch.state
    library = patch.library
    replace = patch.replace
    requires = patch.requires
  }
}

/// Renders the status as an aligned tree; the first line answers "what is patched?".
public func renderStatusText(_ report: StatusReport) -> String {
  if report.targets.isEmpty { return "no patched targets" }
  var lines: [String] = []
  for target in report.targets {
    lines.append("pid \(target.pid)  \(target.executable)  policy=\(target.policy.rawValue)")
    if target.hooks.isEmpty { lines.append("  no hooked functions") }
    let nameWidth = target.hooks.map(\.function.count).max() ?? 0
    let objectWidth = target.hooks.map(\.object.count).max() ?? 0
    for hook in target.hooks {
      lines.append(
        "  " + pad(hook.function, nameWidth) + "  " + pad(hook.object, objectWidth) + "  "
          + hexAddress(hook.oldAddr))
      let entries = hook.stack.compactMap { item -> StackEntry? in
        if case .replacement(let entry) = item { entry } else { nil }
      }
      let patchWidth = entries.map(\.patch.count).max() ?? 0
      let replacementWidth = entries.map(\.replacement.count).max() ?? 0
      for (n, entry) in entries.enumerated() {
        lines.append(
          "    " + (n == 0 ? "* " : "  ") + pad(entry.patch, patchWidth) + "  "
            + pad(entry.replacement, replacementWidth) + "  " + hexAddress(entry.address))
      }
      lines.append("      (original)")
      if let drift = hook.drift { lines.append("    DRIFT: \(drift)") }
    }
    let patches = target.patches.map { patch in
      "\(patch.id) \(patch.state.rawValue)" + (patch.sha256.map { " sha256=\($0.prefix(16))…" } ?? "")
    }
    lines.append("  patches: " + (patches.isEmpty ? "none" : patches.joined(separator: ", ")))
    if target.patches.contains(where: { $0.state == .disabled }) {
      // Unloading could pull code from under a thread that is still to return into it.
      lines.append("  note: disabled patches stay loaded (threads may still return into their code)")
    }
  }
  return lines.joined(separator: "\n")
}

private func pad(_ text: String, _ width: Int) -> String {
  text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}
