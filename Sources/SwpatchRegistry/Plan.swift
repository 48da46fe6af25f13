import SwpatchBase

/// One memory change the patcher must make in the target.
public enum Effect: Equatable, Sendable, Codable, CustomStringConvertible {
  /// Create a slot whose cell points to `target`, then write the entry jump to it.
  case installHook(site: FunctionSite, target: UInt64)
  /// One 8-byte store into the hook's cell.
  case setSlot(oldAddr: UInt64, cellAddr: UInt64, from: UInt64, to: UInt64)
  /// Put the original entry bytes back, then free the slot.
  case removeHook(oldAddr: UInt64, install: HookInstall)
  /// One 8-byte store into a replacement's `prev` cell.
  case setPrev(oldAddr: UInt64, cell: UInt64, to: PrevTarget)

  public var oldAddr: UInt64 {
    switch self {
    case .installHook(let site, _): site.oldAddr
    case .setSlot(let oldAddr, _, _, _): oldAddr
    case .removeHook(let oldAddr, _): oldAddr
    case .setPrev(let oldAddr, _, _): oldAddr
    }
  }

  /// The function an `installHook` hooks; nil for other effects.
  public var installedSite: FunctionSite? {
    if case .installHook(let site, _) = self { return site }
    return nil
  }

  /// The old address a `removeHook` restores; nil for other effects.
  public var removedAddress: UInt64? {
    if case .removeHook(let oldAddr, _) = self { return oldAddr }
    return nil
  }

  /// Hex addresses, so test failures and logs can be compared with /proc/PID/maps.
  public var description: String {
    switch self {
    case .installHook(let site, let target):
      "installHook(\(site.name) \(hexAddress(site.oldAddr)) -> \(hexAddress(target)))"
    case .setSlot(let oldAddr, let cellAddr, let from, let to):
      "setSlot(\(hexAddress(oldAddr)) cell \(hexAddress(cellAddr)): \(hexAddress(from)) -> \(hexAddress(to)))"
    case .removeHook(let oldAddr, let install):
      "removeHook(\(hexAddress(oldAddr)) entry \(hexAddress(install.entryAddr)))"
    case .setPrev(let oldAddr, let cell, let to):
      "setPrev(\(hexAddress(oldAddr)) cell \(hexAddress(cell)) -> \(to))"
    }
  }

  enum CodingKeys: String, CodingKey {
    case kind, site, target, install, from, to, cell
    case oldAddr = "old_addr"
    case cellAddr = "cell_addr"
  }

  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    let kind = try c.decode(String.self, forKey: .kind)
    switch kind {
    case "install_hook":
      self = .installHook(
        site: try c.decode(FunctionSite.self, forKey: .site), target: try c.decodeHex(forKey: .target))
    case "set_slot":
      self = .setSlot(
        oldAddr: try c.decodeHex(forKey: .oldAddr), cellAddr: try c.decodeHex(forKey: .cellAddr),
        from: try c.decodeHex(forKey: .from), to: try c.decodeHex(forKey: .to))
    case "remove_hook":
      self = .removeHook(
        oldAddr: try c.decodeHex(forKey: .oldAddr), install: try c.decode(HookInstall.self, forKey: .install))
    case "set_prev":
      self = .setPrev(
        oldAddr: try c.decodeHex(forKey: .oldAddr), cell: try c.decodeHex(forKey: .cell),
        to: try c.decode(PrevTarget.self, forKey: .to))
    default:
      throw DecodingError.dataCorruptedError(
        forKey: .kind, in: c, debugDescription: "unknown effect kind '\(kind)'")
    }
  }

  public func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    switch self {
    case .installHook(let site, let target):
      try c.encode("install_hook", forKey: .kind)
      try c.encode(site, forKey: .site)
      try c.encodeHex(target, forKey: .target)
    case .setSlot(let oldAddr, let cellAddr, let from, let to):
      try c.encode("set_slot", forKey: .kind)
      try c.encodeHex(oldAddr, forKey: .oldAddr)
      try c.encodeHex(cellAddr, forKey: .cellAddr)
      try c.encodeHex(from, forKey: .from)
      try c.encodeHex(to, forKey: .to)
    case .removeHook(let oldAddr, let install):
      try c.encode("remove_hook", forKey: .kind)
      try c.encodeHex(oldAddr, forKey: .oldAddr)
      try c.encode(install, forKey: .install)
    case .setPrev(let oldAddr, let cell, let to):
      try c.encode("set_prev", forKey: .kind)
      try c.encodeHex(oldAddr, forKey: .oldAddr)
      try c.encodeHex(cell, forKey: .cell)
      try c.encode(to, forKey: .to)
    }
  }
}

/// What a `prev` cell points to: a replacement below in the stack, or the original
/// function (its relocated prologue, known once the hook exists).
public enum PrevTarget: Hashable, Sendable, Codable, CustomStringConvertible {
  case original
  case replacement(UInt64)

  public var description: String {
    switch self {
    case .original: "original"
    case .replacement(let address): hexAddress(address)
    }
  }

  public init(from decoder: any Decoder) throws {
    let text = try decoder.singleValueContainer().decode(String.self)
    if text == "original" {
      self = .original
    } else if let address = parseHexAddress(text) {
      self = .replacement(address)
    } else {
      throw DecodingError.dataCorrupted(
        .init(codingPath: decoder.codingPath, debugDescription: "expected 'original' or a hex address"))
    }
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(description)
  }
}

/// What the user asked for; a plan records it so commit can replay it.
public enum Operation: Equatable, Sendable, Codable, CustomStringConvertible {
  case attach(patchID: String)
  case enable(patchID: String)
  case disable(patchID: String)
  /// A new build of a known patch put in place of the old one in every stack position.
  case upgrade(patchID: String)

  public var patchID: String {
    switch self {
    case .attach(let id), .enable(let id), .disable(let id), .upgrade(let id): id
    }
  }

  public var verb: String {
    switch self {
    case .attach: "attach"
    case .enable: "enable"
    case .disable: "disable"
    case .upgrade: "upgrade"
    }
  }

  public var description: String { "\(verb) '\(patchID)'" }

  enum CodingKeys: String, CodingKey { case kind, patch }

  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    let kind = try c.decode(String.self, forKey: .kind)
    let id = try c.decode(String.self, forKey: .patch)
    switch kind {
    case "attach": self = .attach(patchID: id)
    case "enable": self = .enable(patchID: id)
    case "disable": self = .disable(patchID: id)
    case "upgrade": self = .upgrade(patchID: id)
    default:
      throw DecodingError.dataCorruptedError(
        forKey: .kind, in: c, debugDescription: "unknown operation '\(kind)'")
    }
  }

  public func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(verb, forKey: .kind)
    try c.encode(patchID, forKey: .patch)
  }
}

/// The decided memory changes for one operation, to execute and then commit.
public struct Plan: Equatable, Sendable, Codable, CustomStringConvertible {
  public let target: TargetID
  public let operation: Operation
  /// Installs first, then slot stores, then removals; each group by address.
  public let effects: [Effect]
  /// The target's generation when planned; commit refuses any other.
  public let generation: UInt64
  /// The policy the target has after the commit (fixed by the first attach).
  public let policy: DisablePolicy
  /// The patch being attached; commit needs its functions. Nil for enable/disable.
  public let patch: Patch?
  /// Other patches this plan disables (atomic replace).
  public let alsoDisabled: [String]
  /// One human line per effect, naming functions and patches the bare effects cannot.
  public let steps: [String]

  /// The oldAddrs commit expects a HookInstall for.
  public var newHooks: [UInt64] {
    effects.compactMap {
      if case .installHook(let site, _) = $0 { site.oldAddr } else { nil }
    }
  }

  public var description: String {
    var header = "\(operation) on pid \(target.pid) (policy \(policy.rawValue))"
    if !alsoDisabled.isEmpty { header += ", also disables \(alsoDisabled.joined(separator: ", "))" }
    if steps.isEmpty { return header + "\n  no memory changes: the active functions stay the same" }
    return ([header + ":"] + steps.map { "  " + $0 }).joined(separator: "\n")
  }

  enum CodingKeys: String, CodingKey {
    case target, operation, effects, generation, policy, patch, steps
    case alsoDisabled = "also_disabled"
  }
}
