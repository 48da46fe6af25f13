import SwpatchBase

/// Everything swpatch knows about one patched process; changed only by committing a plan.
public struct TargetState: Equatable, Sendable, Codable {
  public let id: TargetID
  public private(set) var executable: String
  public private(set) var policy: DisablePolicy
  /// Keyed by the original function's address.
  public private(set) var hooks: [UInt64: Hook]
  /// In order of first attach, so listings stay stable across enable/disable.
  public private(set) var patches: [Patch]
  public private(set) var pages: [TrampolinePage]
  public private(set) var libraries: [LoadedLibrary]
  /// The enableSeq the next enabled patch gets.
  public private(set) var nextSeq: UInt64
  /// Bumped by every commit, so a plan made against an older state is recognised as stale.
  public private(set) var generation: UInt64
  /// The program image the entries describe (`AT_RANDOM` of the last `execve`, see
  /// `TargetProcess.execID`); nil when unknown (registries written before it existed).
  /// A process whose image differs has run `execve`: its entries are dropped.
  public internal(set) var execID: String?
  /// The pid of the patched parent whose hooks this process inherited through `fork`
  /// and that swpatch adopted; nil for a process patched directly.
  public internal(set) var inheritedFrom: Int32?

  private(set) var patchIndex: [String: Int]

  /// A target with nothing applied yet; its first patch fixes the policy.
  public static func new(
    id: TargetID, executable: String, policy: DisablePolicy, execID: String? = nil
  ) -> TargetState {
    var state = TargetState(
      id: id, executable: executable, policy: policy, hooks: [:], patches: [], pages: [], libraries: [],
      nextSeq: 1, generation: 0)
    state.execID = execID
    return state
  }

  /// This state taken over by a child forked from the target: the child's memory is a
  /// copy of the parent's, so it holds the same hooks, slots, pages and libraries, and
  /// from now on they change independently.
  public func adopted(by child: TargetID, execID: String?) -> TargetState {
    var state = TargetState(
      id: child, executable: executable, policy: policy, hooks: hooks, patches: patches, pages: pages,
      libraries: libraries, nextSeq: nextSeq, generation: 0)
    state.execID = execID
    state.inheritedFrom = id.pid
    return state
  }

  init(
    id: TargetID, executable: String, policy: DisablePolicy, hooks: [UInt64: Hook], patches: [Patch],
    pages: [TrampolinePage], libraries: [LoadedLibrary], nextSeq: UInt64, generation: UInt64
  ) {
    self.id = id
    self.executable = executable
    self.policy = policy
    self.hooks = hooks
    self.patches = patches
    self.pages = pages
    self.libraries = libraries
    self.nextSeq = nextSeq
    self.generation = generation
    self.patchIndex = Self.index(patches)
  }

  private static func index(_ patches: [Patch]) -> [String: Int] {
    Dictionary(
      patches.enumerated().map { ($0.element.id, $0.offset) }, uniquingKeysWith: { first, _ in first })
  }

  public func patch(_ id: String) -> Patch? {
    patchIndex[id].map { patches[$0] }
  }

  public func hook(at oldAddr: UInt64) -> Hook? {
    hooks[oldAddr]
  }

  /// Hooks ordered by address, for deterministic output.
  public var sortedHooks: [Hook] {
    hooks.keys.sorted().map { hooks[$0]! }
  }

  public var patchIDs: [String] { patches.map(\.id) }

  // MARK: Codable — hooks travel as an array (JSON has no integer keys); the index is rebuilt.

  enum CodingKeys: String, CodingKey {
    case id, executable, policy, hooks, patches, pages, libraries, generation
    case nextSeq = "next_seq"
    case execID = "exec_id"
    case inheritedFrom = "inherited_from"
  }

  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    let hookList = try c.decode([Hook].self, forKey: .hooks)
    var hooks: [UInt64: Hook] = [:]
    for hook in hookList {
      guard hooks.updateValue(hook, forKey: hook.site.oldAddr) == nil else {
        throw DecodingError.dataCorruptedError(
          forKey: .hooks, in: c, debugDescription: "two hooks for \(hexAddress(hook.site.oldAddr))")
      }
    }
    let patches = try c.decode([Patch].self, forKey: .patches)
    guard Set(patches.map(\.id)).count == patches.count else {
      throw DecodingError.dataCorruptedError(forKey: .patches, in: c, debugDescription: "duplicate patch id")
    }
    self.init(
      id: try c.decode(TargetID.self, forKey: .id),
      executable: try c.decode(String.self, forKey: .executable),
      policy: try c.decode(DisablePolicy.self, forKey: .policy),
      hooks: hooks, patches: patches,
      pages: try c.decode([TrampolinePage].self, forKey: .pages),
      libraries: try c.decode([LoadedLibrary].self, forKey: .libraries),
      nextSeq: try c.decode(UInt64.self, forKey: .nextSeq),
      generation: try c.decode(UInt64.self, forKey: .generation))
    execID = try c.decodeIfPresent(String.self, forKey: .execID)
    inheritedFrom = try c.decodeIfPresent(Int32.self, forKey: .inheritedFrom)
  }

  public func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(id, forKey: .id)
    try c.encode(executable, forKey: .executable)
    try c.encode(policy, forKey: .policy)
    try c.encode(sortedHooks, forKey: .hooks)
    try c.encode(patches, forKey: .patches)
    try c.encode(pages, forKey: .pages)
    try c.encode(libraries, forKey: .libraries)
    try c.encode(nextSeq, forKey: .nextSeq)
    try c.encode(generation, forKey: .generation)
    try c.encodeIfPresent(execID, forKey: .execID)
    try c.encodeIfPresent(inheritedFrom, forKey: .inheritedFrom)
  }

  public static func == (lhs: TargetState, rhs: TargetState) -> Bool {
    lhs.id == rhs.id && lhs.executable == rhs.executable && lhs.policy == rhs.policy
      && lhs.hooks == rhs.hooks && lhs.patches == rhs.patches && lhs.pages == rhs.pages
      && lhs.libraries == rhs.libraries && lhs.nextSeq == rhs.nextSeq && lhs.generation == rhs.generation
      && lhs.execID == rhs.execID && lhs.inheritedFrom == rhs.inheritedFrom
  }
}

/// All patched targets; the unit that is persisted between swpatch invocations.
public struct RegistryState: Equatable, Sendable, Codable {
  /// Sorted by pid then start time, so files and listings are deterministic.
  public private(set) var targets: [TargetState]

  public init(targets: [TargetState] = []) {
    self.targets = []
    for target in targets { upsert(target) }
  }

  public func target(_ id: TargetID) -> TargetState? {
    targets.first { $0.id == id }
  }

  /// Targets that ever had this pid; more than one means the pid was recycled.
  public func targets(pid: Int32) -> [TargetState] {
    targets.filter { $0.id.pid == pid }
  }

  public mutating func upsert(_ target: TargetState) {
    if let i = targets.firstIndex(where: { $0.id == target.id }) {
      targets[i] = target
    } else {
      let i = targets.firstIndex { target.id < $0.id } ?? targets.endIndex
      targets.insert(target, at: i)
    }
  }

  @discardableResult
  public mutating func remove(_ id: TargetID) -> TargetState? {
    guard let i = targets.firstIndex(where: { $0.id == id }) else { return nil }
    return targets.remove(at: i)
  }

  enum CodingKeys: String, CodingKey { case targets }

  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    self.init(targets: try c.decode([TargetState].self, forKey: .targets))
  }
}
