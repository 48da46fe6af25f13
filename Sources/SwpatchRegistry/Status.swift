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

  /// Fills in each patch's `origin.on_disk` with what `check(path, sha256)` finds (the
  /// registry reads no files; the daemon hashes them).
  public mutating func mark(onDisk check: (String, String?) -> LibraryOnDisk) {
    for t in targets.indices {
      for p in targets[t].patches.indices {
        guard let origin = targets[t].patches[p].origin else { continue }
        targets[t].patches[p].origin?.onDisk = check(origin.path, origin.sha256)
      }
    }
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
  @Hex public var oldAddr: UInt64
  @Hex public var slot: UInt64
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
    // Bottom first, each `prev` shown as what it points to: the entry below, or the original.
    var entries = hook.stack
    for i in entries.indices where entries[i].prevCell != nil {
      entries[i].prev = i == 0 ? "original" : hexAddress(entries[i - 1].address)
    }
    stack = entries.reversed().map(StackItem.replacement) + [.original]
  }

  enum CodingKeys: String, CodingKey {
    case function, object, slot, stack, drift
    case oldAddr = "old_addr"
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
  /// Where the patch came from and whether that file still holds what was loaded.
  public var origin: PatchOrigin?

  public init(_ patch: Patch) {
    sha256 = patch.sha256
    origin = PatchOrigin(path: patch.library, sha256: patch.sha256, patchFile: patch.patchFile)
    id = patch.id
    state = patch.state
    library = patch.library
    replace = patch.replace
    requires = patch.requires
  }
}

/// Whether the library file a patch was attached from still holds the content loaded.
public enum LibraryOnDisk: String, Sendable, Codable {
  /// Its SHA-256 is still the one loaded.
  case same
  /// It holds other content now: `enable` would still load the stored copy, and a new
  /// build is attached with `attach --upgrade` or a new id.
  case changed
  /// There is no regular file at that path any more.
  case missing
  /// The registry has no SHA-256 for the patch (attached before it was recorded).
  case unknown
}

/// The origin of a patch in the status report: the library it was attached from, the
/// SHA-256 of the content loaded, and the patch file.
public struct PatchOrigin: Equatable, Sendable, Codable {
  /// The library's path as the patch file named it (resolved to an absolute path).
  public var path: String
  public var sha256: String?
  /// Filled in when the status is answered; nil when nobody looked.
  public var onDisk: LibraryOnDisk?
  /// The patch file, as the client named it.
  public var patchFile: String?

  public init(path: String, sha256: String?, onDisk: LibraryOnDisk? = nil, patchFile: String? = nil) {
    self.path = path
    self.sha256 = sha256
    self.onDisk = onDisk
    self.patchFile = patchFile
  }

  enum CodingKeys: String, CodingKey {
    case path, sha256
    case onDisk = "on_disk"
    case patchFile = "patch_file"
  }
}
